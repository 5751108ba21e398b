/*
 * MAKE_TEST_MODELS: tiny random ESM-2, DNA BERT and classifier in the real on-disk formats,
 * made on the spot so that -profile test runs offline (params.test_models).
 */
process MAKE_TEST_MODELS {
    label 'process_single'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    val package_id

    output:
    path 'test_models/esm2_*.pt', emit: esm
    path 'test_models/dna', emit: dna
    path 'test_models/classifier_*.pt', emit: classifier
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    virnucpro_stage.py make-test-models test_models ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p test_models/dna
    touch test_models/esm2_t2_test_tiny.pt test_models/classifier_test_tiny_300.pt

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
