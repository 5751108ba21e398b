"""Training and evaluating classifiers on labelled data (``virnucpro train`` / ``evaluate``).

The stages, each a library function behind a thin command (docs/training.md):

- :mod:`~virnucpro.training.labelled` (``prepare-labelled``): a labelled sheet (:mod:`.sheet`) of
  FASTA/FASTQ/GenBank files (:mod:`.genbank`) -> the prepared layout of ``prepare`` plus
  ``labels.tsv`` and the split (:mod:`.splits`, ``split.tsv``);
- the embedding stages of ``predict``, unchanged (``embed-dna``, ``embed-esm`` on the shards);
- :mod:`~virnucpro.training.fit` (``fit``): the reference MLP trained on the embeddings
  (:mod:`.dataset`), calibrated (:mod:`.calibration`), saved as a native checkpoint with its
  training metadata, then evaluated on the held-out part;
- :mod:`~virnucpro.training.evaluation` (``evaluate-embedded``, ``evaluate-predictions``): the
  prediction files of ``classify`` joined with the labels -> metrics (:mod:`.metrics`), tables and
  plots (:mod:`.plots`);
- :mod:`~virnucpro.training.run`: ``train`` and ``evaluate``, all stages on one machine.
"""
