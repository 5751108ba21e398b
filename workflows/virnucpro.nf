/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    VIRNUCPRO: prepare -> scatter shards to EMBED_DNA / EMBED_ESM -> gather -> PREDICT -> SUMMARIZE
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Every process is one `virnucpro <stage>` command line (bin/virnucpro_stage.py).
    A shard whose embedding failed or whose task was lost does not stop the others: PREDICT
    runs with what arrived and calls the affected sequences `failed`; SUMMARIZE turns the
    samples' statuses into the run's status (0 ok / 2 partial / 1 failed).
*/

include { MAKE_TEST_MODELS } from '../modules/local/make_test_models/main'
include { PREPARE          } from '../modules/local/prepare/main'
include { EMBED_DNA        } from '../modules/local/embed_dna/main'
include { EMBED_ESM        } from '../modules/local/embed_esm/main'
include { PREDICT          } from '../modules/local/predict/main'
include { SUMMARIZE        } from '../modules/local/summarize/main'

/*
 * A model as a process input: [name for the command line, files to stage under model/].
 * A value naming an existing file or directory (local or remote) is staged, so that it also
 * reaches cloud and cluster tasks; anything else is a model name (fair-esm name, hub id,
 * 300/500) passed through unchanged, with nothing to stage.
 */
def modelInput(value) {
    if (!value) {
        return ['', []]
    }
    def model = file(value.toString())
    if (!model.exists()) {
        return [value.toString(), []]
    }
    def regression = model.resolveSibling("${model.baseName}-contact-regression.pt")
    def staged = model.name.endsWith('.pt') && regression.exists() ? [model, regression] : [model]
    return ["model/${model.name}", staged]
}

// The same for models a process made: the main file is the one that is not fair-esm's regression head.
def stagedModel(files) {
    def all = [files].flatten()
    def main = all.find { f -> !f.name.endsWith('-contact-regression.pt') }
    return ["model/${main.name}", all]
}

// The files of one embedding kind ('dna' or 'esm') among a sample's gathered task results.
def resultsOf(kinds, results, kind) {
    return [kinds, results].transpose().findAll { pair -> pair[0] == kind }.collect { pair -> pair[1] }.flatten()
}

workflow VIRNUCPRO {
    take:
    ch_samples   // channel: [ meta (id), [ FASTA/FASTQ files ] ]
    esm_model    // string: fair-esm name or path of an esm2*.pt file
    dna_model    // string: hub id or path of a transformers directory
    classifier   // string: '' (reference model for the chunk length), 300, 500 or a checkpoint path
    test_models  // boolean: make tiny test models and use them instead of the three above

    main:
    ch_versions = channel.empty()

    ch_esm_model = channel.value(modelInput(esm_model))
    ch_dna_model = channel.value(modelInput(dna_model))
    ch_classifier = channel.value(modelInput(classifier))
    if (test_models) {
        MAKE_TEST_MODELS()
        ch_esm_model = MAKE_TEST_MODELS.out.esm.map { files -> stagedModel(files) }.first()
        ch_dna_model = MAKE_TEST_MODELS.out.dna.map { files -> stagedModel(files) }.first()
        ch_classifier = MAKE_TEST_MODELS.out.classifier.map { files -> stagedModel(files) }.first()
        ch_versions = ch_versions.mix(MAKE_TEST_MODELS.out.versions)
    }

    //
    // Prepare each sample; a sample without any kept frame has no shards and goes straight to PREDICT.
    //
    PREPARE(ch_samples)
    ch_versions = ch_versions.mix(PREPARE.out.versions.first())

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

    EMBED_DNA(ch_dna_shards, ch_dna_model)
    EMBED_ESM(ch_esm_shards, ch_esm_model)
    ch_versions = ch_versions.mix(EMBED_DNA.out.versions.first(), EMBED_ESM.out.versions.first())

    //
    // Gather per sample. groupKey releases a sample as soon as all its shards are back; with
    // remainder, a sample whose tasks were lost (errorStrategy 'ignore') is released at the end.
    //
    ch_embedded = EMBED_DNA.out.results
        .map { meta, results -> [groupKey(meta.id, meta.expected), 'dna', results] }
        .mix(EMBED_ESM.out.results.map { meta, results -> [groupKey(meta.id, meta.expected), 'esm', results] })
        .groupTuple(remainder: true)
        .map { key, kinds, results ->
            [key.toString(), [dna: resultsOf(kinds, results, 'dna'), esm: resultsOf(kinds, results, 'esm')]]
        }

    ch_predict = PREPARE.out.prepared
        .map { meta, prepared -> [meta.id, meta, prepared] }
        .join(ch_embedded, remainder: true)
        .map { _id, meta, prepared, embedded ->
            [meta, prepared, embedded ? embedded.dna : [], embedded ? embedded.esm : []]
        }

    PREDICT(ch_predict, ch_classifier)
    ch_versions = ch_versions.mix(PREDICT.out.versions.first())

    //
    // One status for the run; every sample of the input is named, so a lost one counts as failed.
    //
    ch_sample_ids = ch_samples.map { meta, _files -> meta.id }.collect()
    ch_sample_dirs = PREDICT.out.results.map { _meta, directory -> directory }.collect().ifEmpty([])
    SUMMARIZE(ch_sample_dirs, ch_sample_ids)
    ch_versions = ch_versions.mix(SUMMARIZE.out.versions)

    emit:
    status   = SUMMARIZE.out.status     // channel: path(run_status.txt)
    summary  = SUMMARIZE.out.summary    // channel: path(run_summary.json)
    results  = PREDICT.out.results      // channel: [ meta, path(<sample>/) ]
    versions = ch_versions              // channel: path(versions.yml)
}
