/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    VIRNUCPRO: prepare -> scatter shards to EMBED_DNA / EMBED_ESM -> gather -> PREDICT
               -> SUMMARIZE -> MULTIQC, RUN_STATUS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Every process is one `virnucpro <stage>` command line (bin/virnucpro_stage.py).
    A shard whose embedding failed or whose task was lost does not stop the others: PREDICT
    runs with what arrived and calls the affected sequences `failed`; SUMMARIZE turns the
    samples' statuses into the run's status (0 ok / 2 partial / 1 failed) and RUN_STATUS,
    last, fails the run when that status says so.
*/

include { MODELS                } from '../subworkflows/local/models/main'
include { PREPARE               } from '../modules/local/prepare/main'
include { EMBED as EMBED_DNA    } from '../modules/local/embed/main'
include { EMBED as EMBED_ESM    } from '../modules/local/embed/main'
include { PREDICT               } from '../modules/local/predict/main'
include { SUMMARIZE             } from '../modules/local/summarize/main'
include { RUN_STATUS            } from '../modules/local/run_status/main'
include { MULTIQC               } from '../modules/local/multiqc/main'

// The files of one sample's embedding results, in name order (their completion order would
// change the task hash of PREDICT from run to run and defeat -resume).
def sortedByName(files) {
    return [files].flatten().sort { f -> f.name }
}

workflow VIRNUCPRO {
    take:
    ch_samples      // channel: [ meta (id, pairing), [ FASTA/FASTQ files ] ]
    esm_model       // string: fair-esm name or path of an esm2*.pt file
    dna_model       // string: hub id or path of a model directory
    classifier      // string: 300, 500 (reference model, fetched) or a checkpoint path
    test_models     // boolean: make tiny test models and use them instead of the three above
    fail_on_partial // boolean: status 2 fails the run too
    package_id      // string: fingerprint of the virnucpro package the tasks run (part of every task hash)
    outdir          // string: where results are published (named in the final message)
    skip_multiqc    // boolean: no MultiQC report

    main:
    ch_versions = channel.empty()

    //
    // Models: made on the spot (test), staged from a path, or fetched once by name.
    //
    MODELS(esm_model, dna_model, classifier, test_models, package_id)
    ch_esm_model = MODELS.out.esm
    ch_dna_model = MODELS.out.dna
    ch_classifier = MODELS.out.classifier
    ch_versions = ch_versions.mix(MODELS.out.versions)

    //
    // Prepare each sample; a sample without any kept frame has no shards and goes straight to PREDICT.
    //
    PREPARE(ch_samples, package_id)
    ch_versions = ch_versions.mix(PREPARE.out.versions)

    //
    // Scatter: one task per shard and model. `expected` = how many results the sample waits for.
    //
    ch_shards = PREPARE.out.shards.map { meta, nucleotide, protein ->
        [meta + [expected: nucleotide.size() + protein.size()], nucleotide, protein]
    }
    ch_dna_shards = ch_shards.flatMap { meta, nucleotide, _protein ->
        nucleotide.collect { fasta -> [meta + [shard: fasta.baseName], fasta] }
    }
    ch_esm_shards = ch_shards.flatMap { meta, _nucleotide, protein ->
        protein.collect { fasta -> [meta + [shard: fasta.baseName], fasta] }
    }

    EMBED_DNA(ch_dna_shards, ch_dna_model, package_id)
    EMBED_ESM(ch_esm_shards, ch_esm_model, package_id)
    ch_versions = ch_versions.mix(EMBED_DNA.out.versions, EMBED_ESM.out.versions)

    //
    // Gather per sample. groupKey releases a sample as soon as all its shards are back; with
    // remainder, a sample whose tasks were lost (errorStrategy 'ignore') is released at the end.
    //
    ch_embedded = EMBED_DNA.out.results
        .map { meta, results -> [groupKey(meta.id, meta.expected), [dna: results]] }
        .mix(EMBED_ESM.out.results.map { meta, results -> [groupKey(meta.id, meta.expected), [esm: results]] })
        .groupTuple(remainder: true)
        .map { key, results ->
            [key.toString(), [dna: sortedByName(results.collect { r -> r.dna ?: [] }), esm: sortedByName(results.collect { r -> r.esm ?: [] })]]
        }

    // The sample's input files go along: classify copies the records of the --extract calls from them.
    ch_predict = PREPARE.out.prepared
        .map { meta, prepared -> [meta.id, meta, prepared] }
        .join(ch_samples.map { meta, files -> [meta.id, files] })
        .join(ch_embedded, remainder: true)
        .map { _id, meta, prepared, files, embedded ->
            [meta, files, prepared, embedded ? embedded.dna : [], embedded ? embedded.esm : []]
        }

    PREDICT(ch_predict, ch_classifier, package_id)
    ch_versions = ch_versions.mix(PREDICT.out.versions)

    //
    // One status for the run; every sample of the input is named, so a lost one counts as failed.
    //
    ch_sample_ids = ch_samples.map { meta, _files -> meta.id }.toSortedList()
    ch_sample_dirs = PREDICT.out.results.map { _meta, directory -> directory }.toSortedList { a, b -> a.name <=> b.name }
    ch_engine_summaries = EMBED_DNA.out.summary.mix(EMBED_ESM.out.summary).toSortedList { a, b -> a.name <=> b.name }
    SUMMARIZE(ch_sample_dirs, ch_sample_ids, ch_engine_summaries, package_id)
    ch_versions = ch_versions.mix(SUMMARIZE.out.versions)

    if (!skip_multiqc) {
        MULTIQC(SUMMARIZE.out.multiqc, package_id)
        ch_versions = ch_versions.mix(MULTIQC.out.versions)
    }

    RUN_STATUS(SUMMARIZE.out.status, fail_on_partial, outdir, 'predict')

    emit:
    status   = SUMMARIZE.out.status     // channel: path(run_status.txt)
    summary  = SUMMARIZE.out.summary    // channel: path(run_summary.json)
    results  = PREDICT.out.results      // channel: [ meta, path(<sample>/) ]
    message  = RUN_STATUS.out.message   // channel: the run's status in words (status 0, or 2 without --fail_on_partial)
    versions = ch_versions              // channel: path(versions.yml)
}
