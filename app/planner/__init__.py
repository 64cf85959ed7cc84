"""The planner: memory, FLOPs, time and cost of every fine-tuning method before launch.

Instant (pure Python, no torch; milliseconds):
  architecture.py    config.json -> Architecture (the numbers; errors name the field)
  setup.py           one method's training configuration, as both estimators read it
  params.py          parameter inventories (base model, each method's trainable tensors)
  activations.py     what autograd keeps, op by op, per decoder layer
  optimizer_memory.py  optimiser states and step() temporaries
  memory.py          the peak as a maximum over the phases of a step, with its breakdown
  compute.py         FLOPs per step; time and cost on a GPU
  fit.py             "make it fit": micro-batch, accumulation, checkpointing for one GPU
  estimate.py        the answer shape shared by both estimators
  catalog.py, data/  model architectures and GPUs (files now, a database table later)
  service.py         request -> estimates, with 422-ready errors

Traced (imports torch; the worker's planning queue only):
  trace.py, trace_model.py, trace_memory.py   one real training step under FakeTensorMode
"""
