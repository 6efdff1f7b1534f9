"""Tools for developers and evaluators, never imported by the worker's runtime path
(``worker.app``, its tasks and services; an import contract checks it): the benchmark
(``billing bench``), the soak (``billing soak``), the embedded in-process worker the demo
and tests use, and the demo (``billing demo``)."""
