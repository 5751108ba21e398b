/*
 * MULTIQC: the MultiQC report over the samples' MultiQC files that SUMMARIZE writes
 * (<sample>_virnucpro_mqc.tsv: the calls as a bar plot; <sample>_virnucpro_mqc.yaml: General
 * Statistics columns). MultiQC finds both by their names; no configuration is needed.
 * Writes multiqc_report.html and multiqc_data/. Skipped with --skip_multiqc.
 */
process MULTIQC {
    label 'process_single'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    path mqc_files, stageAs: 'virnucpro/*'
    val package_id

    output:
    path 'multiqc_report.html', emit: report
    path 'multiqc_data', emit: data
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    export MPLCONFIGDIR="\$PWD/.matplotlib"  # a writable cache whatever HOME is in a container
    multiqc --force ${args} virnucpro

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        multiqc: \$(multiqc --version | sed 's/^.* //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p multiqc_data
    touch multiqc_report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        multiqc: stub
    END_VERSIONS
    """
}
