/*
 * RUN_STATUS: the last step. It announces the run's status (SUMMARIZE's run_status.txt) and
 * fails the run (exit 1) on status 1, and on status 2 with --fail_on_partial. Its errorStrategy
 * is 'finish': Nextflow then waits for every result to be published before it exits, so the
 * sample folders and the status files are complete whatever the status.
 */
process RUN_STATUS {
    label 'process_single'
    errorStrategy 'finish'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    path status_file
    val fail_on_partial
    val outdir

    output:
    stdout emit: message

    script:
    def info = "${outdir}/pipeline_info"
    """
    status=\$(cat ${status_file})
    case "\$status" in
        0)
            echo "virnucpro: run status 0 (ok): every sample was classified. Results: ${outdir}"
            ;;
        2)
            message="virnucpro: run status 2 (PARTIAL RESULT): some sequences could not be classified; they are called 'failed' in <sample>/sequence_predictions.tsv and listed in ${info}/failed_files.txt"
            if [ "${fail_on_partial}" = "true" ]; then
                echo "\$message; the run fails (--fail_on_partial)" >&2
                exit 1
            fi
            echo "\$message; use --fail_on_partial to fail the run instead"
            ;;
        *)
            echo "virnucpro: run status \$status (FAILED): no sequence could be classified; see ${info}/failed_files.txt and ${info}/run_summary.json" >&2
            exit 1
            ;;
    esac
    """

    stub:
    """
    echo "virnucpro: run status \$(cat ${status_file}) (stub run)"
    """
}
