"""The language-conditioned MuJoCo tabletop suite."""
