/*
 * FETCH_MODEL: a model given by name (a fair-esm name, a Hugging Face hub id, 300/500 for the
 * reference classifier) fetched once per run into fetched/, which every task that needs it then
 * stages; with --model_cache it is kept there (storeDir, conf/modules.config) for later runs.
 * A model given as a path needs no fetching: the workflow stages it directly.
 */
process FETCH_MODEL {
    tag "${kind}:${name}"
    label 'process_single'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    tuple val(kind), val(name)
    val package_id

    output:
    tuple val(kind), path('fetched/*'), emit: model
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    virnucpro_stage.py fetch-model ${kind} ${name} --outdir fetched ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p fetched
    touch fetched/${kind}.stub

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
