/*
 * SUMMARIZE: the run's status over every sample (0 ok, 2 partial, 1 failed), all failures
 * (`{sample}:{file}|{stage}|{message}`), a run summary, the HTML report over every sample
 * (virnucpro_report.html, with the throughput per device and stage of every EMBED task's
 * engine summary) and each sample's MultiQC files (multiqc/). A sample whose PREDICT task is
 * missing gets an empty directory, so `summarize` reports it as failed instead of forgetting it.
 */
process SUMMARIZE {
    label 'process_single'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    path sample_dirs, stageAs: 'samples/*'
    val sample_ids
    path engine_summaries, stageAs: 'engine/*'
    val package_id

    output:
    path 'run_status.txt', emit: status
    path 'run_summary.json', emit: summary
    path 'failed_files.txt', emit: failures, optional: true
    path 'virnucpro_report.html', emit: report
    path 'multiqc', emit: multiqc, optional: true
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def samples = sample_ids.collect { id -> "samples/${id}" }.join(' ')
    def engines = [engine_summaries].flatten().collect { f -> "--engine-summary ${f}" }.join(' ')
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    mkdir -p ${samples}
    status=0
    virnucpro_stage.py summarize ${samples} --outdir . ${engines} ${args} || status=\$?
    if [ ! -s run_status.txt ]; then
        exit "\$status"
    fi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
    END_VERSIONS
    """

    stub:
    """
    echo 0 > run_status.txt
    echo '{"exit_status": 0}' > run_summary.json
    touch virnucpro_report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
