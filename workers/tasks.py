"""The stage functions as Ray remote tasks; the driver sets resources and names per call."""

from __future__ import annotations

import ray

from workers import stages

train_mode_task = ray.remote(stages.train_mode_stage)
m2o_task = ray.remote(stages.m2o_stage)
m2m_task = ray.remote(stages.m2m_stage)
continuity_task = ray.remote(stages.continuity_stage)
linear_task = ray.remote(stages.linear_stage)

TASKS = {
    "train_a": train_mode_task,
    "train_b": train_mode_task,
    "m2o": m2o_task,
    "m2m": m2m_task,
    "continuity": continuity_task,
    "linear": linear_task,
}
