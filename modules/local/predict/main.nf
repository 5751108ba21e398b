/*
 * PREDICT: classify one sample from its prepared frames and every shard's embeddings.
 *
 * Runs with whatever embeddings arrived: a shard whose embedding failed (recorded in a
 * *.failed_files.txt) or whose task was lost after its retries has no .npz, and `classify`
 * calls the sequences with frames in it `failed`. Writes the files of `virnucpro predict`
 * into <sample>/: prediction_results.txt, prediction_results_highestscore.csv,
 * sequence_predictions.tsv, summary.json (with exit_status 0/2/1), failed_files.txt,
 * viral_regions.tsv and viral/ (the records of the --extract calls, copied from the sample's input
 * files, which are staged here and given in PREPARE's order).
 */
process PREDICT {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    tuple val(meta), path(reads, stageAs: 'reads??/*'), path(prepared, stageAs: 'inputs/prepared'), path(dna_results, stageAs: 'inputs/dna/*'), path(esm_results, stageAs: 'inputs/esm/*')
    tuple val(classifier_name), path(classifier_files, stageAs: 'model/*')
    val package_id

    output:
    tuple val(meta), path("${meta.id}"), emit: results
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def prefix = "${meta.id}"
    def classifier = classifier_name ? "--classifier ${classifier_name}" : ''
    def input_files = [reads].flatten().collect { f -> "--input ${f}" }.join(' ')
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    export OMP_NUM_THREADS=${task.cpus}  # torch threads: the task's CPUs, not every core of the node
    mkdir -p inputs/dna inputs/esm
    failed=''
    for f in inputs/dna/*.failed_files.txt inputs/esm/*.failed_files.txt; do
        if [ -e "\$f" ]; then failed="\$failed --failed \$f"; fi
    done

    status=0
    virnucpro_stage.py classify --prepared inputs/prepared --dna-embeddings inputs/dna --esm-embeddings inputs/esm --outdir ${prefix} ${classifier} ${input_files} \$failed ${args} || status=\$?
    if [ ! -s ${prefix}/summary.json ]; then
        exit "\$status"
    fi
    echo "virnucpro: sample ${prefix} classified with status \$status" >&2

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
        torch: \$(python3 -c 'from importlib.metadata import version; print(version("torch"))')
    END_VERSIONS
    """

    stub:
    def prefix = "${meta.id}"
    """
    mkdir -p ${prefix}/viral
    touch ${prefix}/viral_regions.tsv ${prefix}/prediction_results.txt ${prefix}/prediction_results_highestscore.csv ${prefix}/sequence_predictions.tsv
    echo '{"exit_status": 0}' > ${prefix}/summary.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
