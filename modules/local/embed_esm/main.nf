/*
 * EMBED_ESM: ESM-2 embeddings of one protein (frame) shard (one GPU when -profile gpu).
 *
 * A shard the stage could not embed is recorded by the stage in failed_files.txt. Before the
 * last attempt such a shard exits 75 so that Nextflow retries it (conf/base.config: more memory,
 * a smaller batch), unless its only failures are non-finite embeddings (the same again on any
 * attempt); on the last attempt the failure is kept as data
 * (embeddings/<shard>.failed_files.txt) and the run goes on. A model that cannot be used (its
 * files or name; the engine says "the model cannot be used") is not a property of the shard:
 * the task fails at once, as on any other error that is not data. A model that could not be
 * loaded on this machine (out of memory, a device error) is retried like a failed shard.
 */
process EMBED_ESM {
    tag "${meta.id}:${meta.shard}"
    label 'process_gpu'

    conda "${moduleDir}/../../../containers/environment.yml"
    container "${ task.ext.use_gpu ? 'ghcr.io/virnucpro/virnucpro:0.1.0-gpu' : 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu' }"

    input:
    tuple val(meta), path(fasta)
    tuple val(model_name), path(model_files, stageAs: 'model/*')

    output:
    tuple val(meta), path('embeddings/*'), emit: results
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def shard = fasta.baseName
    def last_attempt = task.attempt > (task.maxRetries ?: 0)
    """
    export OMP_NUM_THREADS=${task.cpus}  # torch threads: the task's CPUs, not every core of the node
    status=0
    virnucpro_stage.py embed-esm ${fasta} --outdir embeddings --esm-model ${model_name} ${args} || status=\$?
    rm -f embeddings/summary.json
    if grep -q 'the model cannot be used' embeddings/failed_files.txt 2>/dev/null; then
        head -n 1 embeddings/failed_files.txt >&2
        exit 1
    fi
    if [ -s embeddings/failed_files.txt ]; then
        # Another attempt (more memory, a smaller batch) can cure anything but a non-finite embedding.
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
