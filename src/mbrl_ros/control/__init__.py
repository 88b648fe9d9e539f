"""What commands the arm (pure core): the linear-Gaussian controller (the one interface between
every planner and the executor), the safety layer and its plausibility gates, homing, scripted
controllers and the random-torque base policy pi0."""
