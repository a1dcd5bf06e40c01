"""The pieces of ``benchmarks.train_loop`` (the script is the entry point):

- ``probe``: the step clock (warm-up, timed window, profiled window, time limit), the
  profile summary, VISSL's timers, and the hook that runs the clock inside VISSL's loop;
- ``config``: the modes and the stage configs they run;
- ``loaders``: VISSL's and torchvision's loaders on a JPEG folder (``--phase-folder``);
- ``report``: the tables, notes and results files.
"""
