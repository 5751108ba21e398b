/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    MODELS: the ESM-2, DNA and (when wanted) classifier models as process inputs,
            made on the spot (test), staged from a path, or fetched once by name
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Shared by the predict workflow (VIRNUCPRO) and the training workflow (VIRNUCPRO_TRAINING).
    Each model is [kind, name for the command line, files to stage under model/].
*/

include { MAKE_TEST_MODELS      } from '../../../modules/local/make_test_models/main'
include { FETCH_MODEL           } from '../../../modules/local/fetch_model/main'

/*
 * A model as a process input: [name for the command line, files to stage under model/].
 * The main file of a model's files is the one that is not fair-esm's contact-regression head.
 */
def stagedModel(files) {
    def all = [files].flatten()
    def main = all.find { f -> !f.name.endsWith('-contact-regression.pt') }
    return ["model/${main.name}", all]
}

// A model value naming an existing file or directory (local or remote): staged as it is, with
// fair-esm's contact-regression file beside an ESM-2 .pt. null for a name, which FETCH_MODEL fetches.
def localModel(value) {
    def model = file(value.toString())
    if (!model.exists()) {
        return null
    }
    def regression = model.resolveSibling("${model.baseName}-contact-regression.pt")
    return stagedModel(model.name.endsWith('.pt') && regression.exists() ? [model, regression] : [model])
}

workflow MODELS {
    take:
    esm_model       // string: fair-esm name or path of an esm2*.pt file
    dna_model       // string: hub id or path of a model directory
    classifier      // string: 300, 500 (reference model, fetched), a checkpoint path, or '' when none is needed
    test_models     // boolean: make tiny test models and use them instead of the three above
    package_id      // string: fingerprint of the virnucpro package the tasks run (part of every task hash)

    main:
    ch_versions = channel.empty()
    if (test_models) {
        MAKE_TEST_MODELS(package_id)
        ch_models = MAKE_TEST_MODELS.out.esm.map { files -> ['esm'] + stagedModel(files) }
            .mix(MAKE_TEST_MODELS.out.dna.map { files -> ['dna'] + stagedModel(files) })
            .mix(MAKE_TEST_MODELS.out.classifier.map { files -> ['classifier'] + stagedModel(files) })
        ch_versions = ch_versions.mix(MAKE_TEST_MODELS.out.versions)
    }
    else {
        def wanted = [esm: esm_model, dna: dna_model] + (classifier ? [classifier: classifier] : [:])
        def given = wanted.collectEntries { kind, value -> [kind, localModel(value)] }.findAll { _kind, staged -> staged != null }
        FETCH_MODEL(channel.fromList(wanted.findAll { kind, _value -> !given.containsKey(kind) }.collect { kind, value -> [kind, value.toString()] }), package_id)
        ch_models = channel.fromList(given.collect { kind, staged -> [kind] + staged })
            .mix(FETCH_MODEL.out.model.map { kind, files -> [kind] + stagedModel(files) })
        ch_versions = ch_versions.mix(FETCH_MODEL.out.versions)
    }

    emit:
    esm        = ch_models.filter { model -> model[0] == 'esm' }.first()                                     // [ 'esm', name, files ]
    dna        = ch_models.filter { model -> model[0] == 'dna' }.first()                                     // [ 'dna', name, files ]
    classifier = ch_models.filter { model -> model[0] == 'classifier' }.map { model -> model.tail() }.first()  // [ name, files ]
    versions   = ch_versions                                                                                // path(versions.yml)
}
