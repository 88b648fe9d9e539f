"""The runnable graphs: which nodes, parameters and remappings each graph has (``description``),
and the two ways to start one: ``mbrl-ros launch`` (``launcher``, ``commands``) and ``ros2
launch`` (``launch_support``). The parameter files themselves are read and written by
``common.param_files``."""
