/*
 * TRAIN: fit the classifier (the reference MLP and recipe) on the embedded frames of a labelled
 * prepared directory: training/ holds classifier.pt, the per-epoch log, metrics, the threshold
 * table, plots, split.tsv, predictions/ and summary.json (exit_status 0 or 2).
 *
 * CPU, not a GPU task: the MLP is small beside the embedding (an epoch over 20,000 frames of
 * 3,328-d features takes about 15 s on one core), and on the CPU the checkpoint is bit-for-bit
 * reproducible for the same data, seeds and threads (torch threads = the task's CPUs).
 * Embeddings that failed (a shard's *.failed_files.txt) or never arrived (a task lost after its
 * retries) leave their frames out: `fit` exits 2 and the run's status is 2. Any other error of
 * `fit` (a part without frames of both labels, say) fails the task: nothing was trained.
 */
process TRAIN {
    label 'process_medium'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    path prepared, stageAs: 'inputs/prepared'
    path dna_results, stageAs: 'inputs/dna/*'
    path esm_results, stageAs: 'inputs/esm/*'
    val package_id

    output:
    path 'training', emit: results
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
    virnucpro_stage.py fit --prepared inputs/prepared --dna-embeddings inputs/dna --esm-embeddings inputs/esm --outdir training --device cpu --threads ${task.cpus} \$failed ${args} || status=\$?
    if [ ! -s training/summary.json ]; then
        exit "\$status"
    fi
    echo "\$status" > run_status.txt
    echo "virnucpro: classifier trained with status \$status" >&2

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
        torch: \$(python3 -c 'from importlib.metadata import version; print(version("torch"))')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p training
    touch training/classifier.pt training/training_log.tsv training/metrics.json
    echo '{"exit_status": 0}' > training/summary.json
    echo 0 > run_status.txt

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
