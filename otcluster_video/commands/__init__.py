"""One module per ``otcluster-video`` command; each has the function the Python API calls and a
``cli(args)`` that the command line dispatches to (imported only when its command runs, so that
``otcluster-video --help`` never imports torch).

==============  ==============================================================================
``synth``       :mod:`.synth` -- synthetic labelled videos (calls :mod:`otcluster_video.synth`)
``prepare``     :mod:`.prepare` -- probe videos into ``RUN/manifest.csv``
``train``       :mod:`.train` -- :class:`otcluster.SelfLabelTrainer` on the run's videos
``select``      :mod:`.select` -- rank runs of the same videos by the agreement of their streams
``label``       :mod:`.label` -- ``RUN/labels.csv`` from the trained heads
``evaluate``    :mod:`.evaluate` -- tables 2 and 5 of the paper; ``degrade`` (fig. 2) too
``retrieval``   :mod:`.retrieval` -- table 4
``explore``     :mod:`.explore` -- the HTML explorer (:func:`otcluster_video.write_explorer`)
==============  ==============================================================================

Shared by the analysis commands: :mod:`._inference` (a trained run without its optimiser:
model, features, head log-probabilities). The run folder's layout is
:mod:`otcluster_video._run`.
"""
