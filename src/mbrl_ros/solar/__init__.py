"""SOLAR (Zhang et al. 2019): a latent space learned from images in which the dynamics are
linear-Gaussian and the cost quadratic, so the KL-constrained LQR of ``mbrl_ros.trajopt`` runs
there. Pure core (torch, numpy): ``vae`` (convolutional encoder/decoder), ``latent_dynamics``
(the matrix-normal-inverse-Wishart prior and its conjugate updates), ``inference`` (structured
mean-field variational inference and its objective), ``training`` (the fit), ``latent_cost``
(quadratic cost from observed costs), ``controller`` (image → latent → linear-Gaussian torque).
"""
