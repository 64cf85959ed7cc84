"""The planner: memory, FLOPs, time and cost of every fine-tuning method before launch.

Instant (pure Python, no torch; milliseconds):
  architecture.py    config.json -> Architecture (the numbers; errors name the field)
  setup.py           one method's training configuration, as both estimators read it
  params.py          parameter inventories (base model, each method's trainable tensors)
  activations.py     what autograd keeps, op by op, per decoder layer
  optimizer_memory.py  optimiser states and step() temporaries
  memory.py          the peak as a maximum over the phases of a step, with its breakdown
  compute.py         FLOPs per step; time and cost on a GPU
  fit.py             "make it fit": the same sequences per step, split, 8-bit stepped or checkpointed for one GPU
  estimate.py        the answer shape shared by both estimators; the like-for-like badges
  caveats.py         what a row could not take of the request (and was estimated without), its precision recipe
  catalog.py, data/  model architectures and GPUs as files: the seed, and the runtime overheads
  db_catalog.py      the catalogs in the database (seeded on first start, edited on /plan/catalog)
  catalog_forms.py   the catalog page's forms -> catalog entries
  service.py         request -> estimates, with 422-ready errors
  records.py         stored plans (the API's POST, the page's Save; once per request), owned like jobs
  job_plan.py        the plan a job is launched with, and what its run measured
  plan_view.py       the plan page's form -> PlanRequest, answer -> table rows
  launch_link.py     a plan row -> the new-job form's address, every setting carried

Traced (imports torch): not here. The fake-tensor tracer, one real training
step under FakeTensorMode, lives in worker/trace/ and runs on the worker's
planning queue (worker/plan_task.py); app/ only queues the request
(traced.py) and reads the answer.
"""
