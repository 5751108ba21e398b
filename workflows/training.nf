/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    VIRNUCPRO_TRAINING (--mode train | evaluate): a labelled sheet -> PREPARE_LABELLED ->
               scatter shards to EMBED_DNA / EMBED_ESM -> gather -> TRAIN or EVALUATE
               -> RUN_STATUS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    The stages of `virnucpro train` / `virnucpro evaluate` as tasks: the embedding (the
    expensive part) scattered over GPUs and nodes exactly as in predict mode, then one CPU
    task that fits (train) or classifies and measures (evaluate). A shard whose embedding
    failed or whose task was lost does not stop the run: its frames are left out and the
    run's status is 2 (0 ok); RUN_STATUS, last, fails the run when that status says so.
*/

include { MODELS                } from '../subworkflows/local/models/main'
include { PREPARE_LABELLED      } from '../modules/local/prepare_labelled/main'
include { EMBED as EMBED_DNA    } from '../modules/local/embed/main'
include { EMBED as EMBED_ESM    } from '../modules/local/embed/main'
include { TRAIN                 } from '../modules/local/train/main'
include { EVALUATE              } from '../modules/local/evaluate/main'
include { RUN_STATUS            } from '../modules/local/run_status/main'

workflow VIRNUCPRO_TRAINING {
    take:
    ch_sheet        // channel: [ meta (id: train|evaluate), [ columns ], [ rows as maps ], [ files, in row order ] ]
    mode            // string: train or evaluate
    esm_model       // string: fair-esm name or path of an esm2*.pt file
    dna_model       // string: hub id or path of a model directory
    classifier      // string: evaluate: 300, 500 or a checkpoint path; train: '' (none)
    test_models     // boolean: make tiny test models and use them instead of the models above
    fail_on_partial // boolean: status 2 fails the run too
    package_id      // string: fingerprint of the virnucpro package the tasks run (part of every task hash)
    outdir          // string: where results are published (named in the final message)

    main:
    ch_versions = channel.empty()

    MODELS(esm_model, dna_model, classifier, test_models, package_id)
    ch_versions = ch_versions.mix(MODELS.out.versions)

    PREPARE_LABELLED(ch_sheet, package_id)
    ch_versions = ch_versions.mix(PREPARE_LABELLED.out.versions)

    //
    // Scatter: one task per shard and model; gather every result, sorted by name (their
    // completion order would change the task hash of TRAIN / EVALUATE and defeat -resume).
    //
    ch_dna_shards = PREPARE_LABELLED.out.shards.flatMap { meta, nucleotide, _protein ->
        nucleotide.collect { fasta -> [meta + [shard: fasta.baseName], fasta] }
    }
    ch_esm_shards = PREPARE_LABELLED.out.shards.flatMap { meta, _nucleotide, protein ->
        protein.collect { fasta -> [meta + [shard: fasta.baseName], fasta] }
    }
    EMBED_DNA(ch_dna_shards, MODELS.out.dna, package_id)
    EMBED_ESM(ch_esm_shards, MODELS.out.esm, package_id)
    ch_versions = ch_versions.mix(EMBED_DNA.out.versions, EMBED_ESM.out.versions)

    ch_dna = EMBED_DNA.out.results.flatMap { _meta, results -> [results].flatten() }.toSortedList { a, b -> a.name <=> b.name }
    ch_esm = EMBED_ESM.out.results.flatMap { _meta, results -> [results].flatten() }.toSortedList { a, b -> a.name <=> b.name }

    if (mode == 'train') {
        TRAIN(PREPARE_LABELLED.out.prepared, ch_dna, ch_esm, package_id)
        ch_results = TRAIN.out.results
        ch_status = TRAIN.out.status
        ch_versions = ch_versions.mix(TRAIN.out.versions)
    }
    else {
        EVALUATE(PREPARE_LABELLED.out.prepared, ch_dna, ch_esm, MODELS.out.classifier, package_id)
        ch_results = EVALUATE.out.results
        ch_status = EVALUATE.out.status
        ch_versions = ch_versions.mix(EVALUATE.out.versions)
    }

    RUN_STATUS(ch_status, fail_on_partial, outdir, mode)

    emit:
    status   = ch_status                // channel: path(run_status.txt)
    results  = ch_results               // channel: path(training/ or evaluation/)
    message  = RUN_STATUS.out.message   // channel: the run's status in words (status 0, or 2 without --fail_on_partial)
    versions = ch_versions              // channel: path(versions.yml)
}
