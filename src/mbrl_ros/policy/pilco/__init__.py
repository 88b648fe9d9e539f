"""PILCO (Deisenroth & Rasmussen 2011): GP dynamics, moment-matching propagation of the Gaussian
state over the horizon, the expected saturating cost, linear and RBF policies with a sine squash,
optimised with analytic gradients (autograd through the moment-matching equations, L-BFGS).

Modules: ``policies`` (policies and their moments), ``cost`` (saturating cost), ``propagation``
(multi-step moments, expected cost), ``optimise`` (L-BFGS with divergence handling), ``loop`` (the
PILCO loop), ``pendulum`` (swing-up task on sim/pendulum.xml), ``arm_reach`` (2-link arm reach).
"""
