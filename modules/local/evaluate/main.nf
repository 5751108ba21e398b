/*
 * EVALUATE: classify the embedded frames of a labelled prepared directory (prepared without a
 * split) with a classifier and measure the calls: evaluation/ holds the prediction files of
 * `predict`, metrics.json/.tsv, thresholds.tsv, plots/ and summary.json (exit_status 0/2/1).
 *
 * CPU, not a GPU task: the classifier is a small MLP. Embeddings that failed or never arrived
 * make their sequences `failed` (counted apart in the metrics) and the status 2.
 */
process EVALUATE {
    label 'process_medium'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    path prepared, stageAs: 'inputs/prepared'
    path dna_results, stageAs: 'inputs/dna/*'
    path esm_results, stageAs: 'inputs/esm/*'
    tuple val(classifier_name), path(classifier_files, stageAs: 'model/*')
    val package_id

    output:
    path 'evaluation', emit: results
    path 'run_status.txt', emit: status
    path 'failed_files.txt', optional: true, emit: failed
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    export OMP_NUM_THREADS=${task.cpus}  # torch threads: the task's CPUs, not every core of the node
    mkdir -p inputs/dna inputs/esm
    failed=''
    for f in inputs/dna/*.failed_files.txt inputs/esm/*.failed_files.txt; do
        if [ -e "\$f" ]; then failed="\$failed --failed \$f"; cat "\$f" >> failed_files.txt; fi
    done

    status=0
    virnucpro_stage.py evaluate-embedded --prepared inputs/prepared --dna-embeddings inputs/dna --esm-embeddings inputs/esm --outdir evaluation --classifier ${classifier_name} \$failed ${args} || status=\$?
    if [ ! -s evaluation/summary.json ]; then
        exit "\$status"
    fi
    echo "\$status" > run_status.txt
    echo "virnucpro: evaluation done with status \$status" >&2

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
        torch: \$(python3 -c 'from importlib.metadata import version; print(version("torch"))')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p evaluation
    touch evaluation/prediction_results.txt evaluation/metrics.json evaluation/thresholds.tsv
    echo '{"exit_status": 0}' > evaluation/summary.json
    echo 0 > run_status.txt

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
