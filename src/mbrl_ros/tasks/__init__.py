"""Tasks: what the planners and learners optimise, and the scenes they run in.

Task costs are torch functions cost(states (..., T+1, dx), actions (..., T, du)) → (...), sums of
per-step terms, built on the batched forward kinematics of ``mbrl_ros.robot.kinematics``:
``reach.ReachCost`` (end-effector reach as in guided policy search), ``tracking.TrackingCost``
(following an end-effector path as in Nagabandi et al.); the shared action and joint-limit
penalties and ``TaskError`` are in ``terms``. Import them from their modules: the package itself
imports nothing, so a node that needs only ``insertion_scene`` (the simulator) starts without torch.
"""
