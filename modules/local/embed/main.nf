/*
 * EMBED: the embeddings of one shard by one model, included twice by the workflow:
 * EMBED_DNA (DNABERT-S on a nucleotide shard) and EMBED_ESM (ESM-2 on a protein shard).
 *
 * GPUs: only with -profile gpu (task.ext.use_gpu); the task then fails at once when it sees no
 * GPU (--require-gpu) instead of running ESM-2 3B on its CPUs for hours, and on the local
 * executor it claims one free GPU of the node with a lock file (--claim-gpu), so concurrent
 * tasks use distinct GPUs whatever the Nextflow release. Without it the task sees no GPU.
 *
 * A shard the stage could not embed is recorded by the stage in failed_files.txt. Before the
 * last attempt such a shard exits 75 so that Nextflow retries it (conf/base.config: a smaller
 * batch), unless its only failures are non-finite embeddings (the same again on any attempt);
 * on the last attempt the failure is kept as data (embeddings/<shard>.failed_files.txt) and the
 * run goes on. A model that cannot be used (its files or name; the engine says "the model cannot
 * be used") is not a property of the shard: the task fails at once, as on any other error that
 * is not data. A model that could not be loaded on this machine (out of memory, a device error)
 * is retried like a failed shard.
 *
 * The stage's summary.json (its engine statistics: devices, throughput per stage) leaves as
 * <kind>.<sample>.<shard>.summary.json, for the throughput in SUMMARIZE's report.
 */
process EMBED {
    tag "${meta.id}:${meta.shard}"
    label 'process_gpu'

    conda "${moduleDir}/../../../containers/environment.yml"
    container "${ task.ext.use_gpu ? 'ghcr.io/virnucpro/virnucpro:0.1.0-gpu' : 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu' }"

    input:
    tuple val(meta), path(fasta)
    tuple val(kind), val(model_name), path(model_files, stageAs: 'model/*')
    val package_id

    output:
    tuple val(meta), path('embeddings/*'), emit: results
    path '*.summary.json', emit: summary, optional: true
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def shard = fasta.baseName
    def last_attempt = task.attempt > (task.maxRetries ?: 0)
    // ext.gpu_lock_dir (conf/base.config): shared by the tasks of a node. Not `workflow.workDir`
    // here: a script that names `workflow` hashes its run-specific fields and defeats -resume.
    def gpu_args = !task.ext.use_gpu ? '' : task.executor == 'local' ? "--require-gpu --claim-gpu ${task.ext.gpu_lock_dir}" : '--require-gpu'
    def hide_gpus = task.ext.use_gpu ? '' : "export CUDA_VISIBLE_DEVICES=''  # GPUs only with -profile gpu"
    """
    # virnucpro package ${package_id}
    ${hide_gpus}
    export OMP_NUM_THREADS=${task.cpus}  # torch threads: the task's CPUs, not every core of the node
    status=0
    virnucpro_stage.py embed-${kind} ${fasta} --outdir embeddings --${kind}-model ${model_name} ${gpu_args} ${args} || status=\$?
    if [ -s embeddings/summary.json ]; then
        mv embeddings/summary.json ${kind}.${meta.id}.${shard}.summary.json
    fi
    rm -f embeddings/summary.json
    if grep -q 'the model cannot be used' embeddings/failed_files.txt 2>/dev/null; then
        head -n 1 embeddings/failed_files.txt >&2
        exit 1
    fi
    if [ -s embeddings/failed_files.txt ]; then
        # Another attempt (a smaller batch) can cure anything but a non-finite embedding.
        if [ "${last_attempt}" != "true" ] && grep -qv ': embedding not finite in ' embeddings/failed_files.txt; then
            echo "virnucpro: shard ${shard} failed (exit \$status), asking for another attempt" >&2
            exit 75
        fi
        mv embeddings/failed_files.txt embeddings/${shard}.failed_files.txt
        echo "virnucpro: shard ${shard}: failures recorded as data, the run goes on" >&2
    elif [ "\$status" -ne 0 ]; then
        exit "\$status"
    fi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
        torch: \$(python3 -c 'from importlib.metadata import version; print(version("torch"))')
        fair-esm: \$(python3 -c 'from importlib.metadata import version; print(version("fair-esm"))')
        tokenizers: \$(python3 -c 'from importlib.metadata import version; print(version("tokenizers"))')
    END_VERSIONS
    """

    stub:
    def shard = fasta.baseName
    """
    mkdir -p embeddings
    touch embeddings/${shard}.npz

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
