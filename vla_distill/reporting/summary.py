"""Combine evaluation and latency results of several policies into summary.json."""

from __future__ import annotations

POLICY_ROLES = ("teacher", "student", "student_onnx", "student_int8")


def policy_summary(eval_info: dict, latency: dict) -> dict:
    """Return the per-policy entry of summary.json."""
    return {
        "params": latency["params"],
        "size_bytes": latency["size_bytes"],
        "success_rate": eval_info["success_rate"],
        "ci95": eval_info["ci95"],
        "latency_ms_p50": latency["threads"]["1"]["latency_ms_p50"],
        "backend": latency["backend"],
        "flops": latency["flops"],
    }


def build_summary(results: dict[str, dict], n_episodes: int, seed: int) -> dict:
    """Build summary.json from ``{role: {"eval": eval_info, "latency": latency_report}}``.

    The ratios compare the teacher in PyTorch with the student: ``params_ratio`` is
    teacher/student parameters, ``speedup_p50`` the teacher's 1-thread p50 latency over the
    student ONNX model's, and ``success_retention`` student/teacher success rate.
    """
    missing = [role for role in POLICY_ROLES if role not in results]
    if missing:
        raise ValueError(f"summary needs results for {list(POLICY_ROLES)}; missing {missing}")
    summary = {role: policy_summary(results[role]["eval"], results[role]["latency"]) for role in POLICY_ROLES}
    teacher, student, onnx = summary["teacher"], summary["student"], summary["student_onnx"]
    summary["params_ratio"] = teacher["params"] / student["params"]
    summary["speedup_p50"] = teacher["latency_ms_p50"] / onnx["latency_ms_p50"]
    summary["success_retention"] = (
        student["success_rate"] / teacher["success_rate"] if teacher["success_rate"] > 0 else None
    )
    summary["n_episodes_per_task"] = n_episodes
    summary["seed"] = seed
    return summary
