"""NASA-T training (paper Sec. "NASA-T"): the NASA-T Train node (``node``) and the trainer it runs (``loop.Trainer``,
one step in ``step``), with its LoRA sets, prompt pairs, model calls, memory saving and checkpoints. Nothing is
re-exported here: import the module you need (``nodes.train.loop``, ...), so loading the node loads no trainer."""
