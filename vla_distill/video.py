"""Write rollout frames to MP4 (through imageio's bundled ffmpeg) or GIF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")


def check_video_path(path: str | Path) -> Path:
    """Return the path, or raise ValueError when its suffix is not a supported video format."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"unsupported video file {path}; use a name ending in .mp4 or .gif")
    return path


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 20) -> Path:
    """Write uint8 RGB frames (H, W, 3) to path and return it."""
    path = check_video_path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, list(frames), fps=fps, codec="libx264", quality=7, macro_block_size=1)
    return path
