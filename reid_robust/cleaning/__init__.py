"""Label cleaning below the engine: the scorer of suspected wrong labels (:mod:`.scoring`, also the label
audit's), the estimate of the wrong-label rate (:mod:`.rate`), the decisions of a self-cleaning round
(:mod:`.decisions`) and their report against a noise manifest (:mod:`.report`). Nothing here imports
``reid_robust.engine`` or ``reid_robust.analysis``."""
