"""Global dynamics models f(s, a) → p(s') behind one interface (``base.DynamicsModel``)."""
