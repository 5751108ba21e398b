"""``virnucpro predict``: prepare -> embed (worker engine, both models) -> classify, on one machine."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro import contracts as c
from virnucpro.classifier.compatibility import check_compatible
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.classifier.reference import resolve_classifier
from virnucpro.classify import CallRule, classify_prepared, classify_summary
from virnucpro.embeddings.dna import DnaSpec
from virnucpro.embeddings.esm import EsmSpec, resolve_layer
from virnucpro.engine import run_embedding
from virnucpro.extract import DEFAULT_EXTRACT, extract_sequences, plan_extraction
from virnucpro.log import get_logger
from virnucpro.outdir import claimed_outdir
from virnucpro.prepare import list_shards, prepare, prepare_is_current, shard_paths
from virnucpro.regions import RegionRule
from virnucpro.seqio import check_inputs
from virnucpro.summary_json import StageTimer, write_summary

log = get_logger("predict")

PREPARED_DIR = "work/prepared"
DNA_EMBEDDINGS_DIR = "work/embeddings/dna"
ESM_EMBEDDINGS_DIR = "work/embeddings/esm"
DEFAULT_CHUNK_LENGTH = 300


@dataclass
class PredictOptions:
    """Everything ``predict`` needs besides inputs and output directory."""

    chunk_length: int | None = None  # None: the classifier's chunk length, else 300
    classifier: str | None = None  # None -> the reference model for chunk_length
    esm: EsmSpec = field(default_factory=lambda: EsmSpec(c.REFERENCE_ESM_MODEL))
    dna: DnaSpec = field(default_factory=lambda: DnaSpec(c.REFERENCE_DNA_MODEL))
    esm_batch_tokens: int | None = None  # None: the embedder's default for its device
    dna_batch_tokens: int | None = None
    batch_size: int = 1024
    gpus: str | None = None
    workers: int | None = None
    resume: bool = False
    shard_size: int = c.DEFAULT_SHARD_RESIDUES
    rule: CallRule = field(default_factory=CallRule)
    progress: str = "auto"
    pairing: str = "auto"
    regions: RegionRule = field(default_factory=RegionRule)
    extract: tuple[str, ...] = DEFAULT_EXTRACT


def check_models_early(meta: ClassifierMeta, options: PredictOptions) -> None:
    """Refuse embedding models the classifier cannot use, from their configs (before any embedding).

    Models whose shape cannot be read cheaply are checked after embedding, from the embedding files.
    """
    dna, esm = options.dna.shape(), options.esm.shape()
    if dna is None or esm is None:
        return
    layer = options.esm.layer
    if esm.layers is not None:
        layer = resolve_layer(layer, esm.layers, options.esm.model)
    check_compatible(
        meta,
        dna_dim=dna.dim,
        esm_dim=esm.dim,
        chunk_length=options.chunk_length,
        dna_model=options.dna.model,
        esm_model=options.esm.model,
        esm_layer=layer,
    )


def load_predict_classifier(options: PredictOptions) -> tuple[MLPClassifier, ClassifierMeta]:
    """``--classifier`` (default: the reference model for the chunk length), checked against the
    embedding models; a chunk length not given becomes the classifier's (else 300)."""
    classifier = resolve_classifier(
        options.classifier or str(options.chunk_length or DEFAULT_CHUNK_LENGTH), options.chunk_length
    )
    options.chunk_length = options.chunk_length or classifier[1].chunk_length or DEFAULT_CHUNK_LENGTH
    check_models_early(classifier[1], options)
    return classifier


def run_predict(inputs: Sequence[str], outdir: Path, options: PredictOptions) -> int:
    """Run every stage; write the prediction files, summary.json and failed_files.txt; return 0/2/1."""
    timer = StageTimer()
    check_inputs(inputs)  # a missing input or model path is named before anything is loaded or downloaded
    options.esm.check()
    options.dna.check()
    with timer.stage("load_classifier"):  # first, so a missing or mismatched classifier fails before GPU work
        classifier = load_predict_classifier(options)
    with claimed_outdir(outdir):  # a second run into the same directory would mix both runs' files
        return _run_stages(list(inputs), Path(outdir), options, classifier, timer)


def _run_stages(
    inputs: list[str], outdir: Path, options: PredictOptions, classifier: tuple, timer: StageTimer
) -> int:
    """prepare, both embeddings, classify and summary.json into ``outdir``; returns 0/2/1.

    An earlier run's result files go first: a run that stops with an error leaves none that
    look like its own (work/ stays for --resume).
    """
    for name in c.RESULT_FILES:
        (outdir / name).unlink(missing_ok=True)
    for name in c.RESULT_DIRS:
        shutil.rmtree(outdir / name, ignore_errors=True)
    prepared = outdir / PREPARED_DIR
    settings = (options.chunk_length, options.shard_size, options.pairing)
    with timer.stage("prepare"):
        if options.resume and prepare_is_current(prepared, inputs, *settings):
            log.info("resume: prepared frames are current, skipping prepare")
        else:
            prepare(inputs, prepared, *settings)
    extraction = plan_extraction(prepared, options.extract)
    engine_stats, failures = embed_prepared(prepared, outdir, options, timer)
    with timer.stage("classify"):
        result_classify = classify_prepared(
            prepared,
            outdir / DNA_EMBEDDINGS_DIR,
            outdir / ESM_EMBEDDINGS_DIR,
            outdir,
            classifier,
            chunk_length=options.chunk_length,
            batch_size=options.batch_size,
            rule=options.rule,
            upstream_failures=failures,
            regions=options.regions,
        )
    with timer.stage("extract"):
        extracted = extract_sequences(extraction, outdir / c.SEQUENCE_PREDICTIONS, outdir)
    summary = classify_summary(result_classify, classifier[1], options.rule, options.regions)
    summary.update(
        command="predict",
        inputs=[str(path) for path in inputs],
        chunk_length=options.chunk_length,
        pairing=options.pairing,
        timings_s=timer.seconds,
        engine=engine_stats,
        extract=extracted.to_dict(),
    )
    write_summary(outdir, summary)
    from virnucpro.report import write_sample_outputs  # matplotlib: loaded when a report is written

    write_sample_outputs(outdir)
    return result_classify.exit_status


def embed_prepared(
    prepared: Path, outdir: Path, options: PredictOptions, timer: StageTimer
) -> tuple[dict[str, dict], list[c.Failure]]:
    """Embed a prepared directory's shards with both models (the worker engine) into
    ``outdir/work/embeddings/{dna,esm}``: the engine statistics per stage and the failures.

    A stage that failed for every shard stops the embedding (the next stages only record it).
    """
    stems = list_shards(prepared)
    engine_stats: dict[str, dict] = {}
    failures: list[c.Failure] = []
    for stage, spec, budget, directory, which in (
        ("embed_dna", options.dna, options.dna_batch_tokens, DNA_EMBEDDINGS_DIR, 0),
        ("embed_esm", options.esm, options.esm_batch_tokens, ESM_EMBEDDINGS_DIR, 1),
    ):
        if not stems:
            break
        files = [str(shard_paths(prepared, stem)[which]) for stem in stems]
        with timer.stage(stage):
            result = run_embedding(
                files,
                spec,
                outdir / directory,
                budget,
                gpus=options.gpus,
                workers=options.workers,
                resume=options.resume,
                progress=options.progress,
            )
        engine_stats[stage] = result.stats
        failures.extend(result.failures)
        if result.exit_code == c.EXIT_FAILED:
            log.error("%s failed for every shard; the remaining stages only record the failure", stage)
            break
    return engine_stats, failures
