/*
 * RUN_STATUS: the last step. It announces the run's status (SUMMARIZE's run_status.txt, or
 * TRAIN's / EVALUATE's) and fails the run (exit 1) on status 1, and on status 2 with
 * --fail_on_partial. Its errorStrategy is 'finish': Nextflow then waits for every result to be
 * published before it exits, so the result folders and the status files are complete whatever
 * the status. `mode` (predict, train, evaluate) picks the words and where they point.
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
    val mode

    output:
    stdout emit: message

    script:
    def info = "${outdir}/pipeline_info"
    def words = [
        predict: [
            ok: "every sample was classified. Results: ${outdir}",
            partial: "some sequences could not be classified; they are called 'failed' in <sample>/sequence_predictions.tsv and listed in ${info}/failed_files.txt",
            failed: "no sequence could be classified; see ${info}/failed_files.txt and ${info}/run_summary.json"
        ],
        train: [
            ok: "the classifier was trained on every frame. Results: ${outdir}/training",
            partial: "frames whose embedding failed were left out of training; see ${outdir}/training/summary.json and ${info}/failed_files.txt",
            failed: "no classifier was trained; see ${outdir}/training/summary.json"
        ],
        evaluate: [
            ok: "every sequence was classified and measured. Results: ${outdir}/evaluation",
            partial: "some sequences could not be classified; they are called 'failed' in ${outdir}/evaluation/sequence_predictions.tsv, counted apart in its metrics.json and listed in ${info}/failed_files.txt",
            failed: "no sequence could be classified; see ${outdir}/evaluation/summary.json"
        ]
    ][mode]
    """
    status=\$(cat ${status_file})
    case "\$status" in
        0)
            echo "virnucpro: run status 0 (ok): ${words.ok}"
            ;;
        2)
            message="virnucpro: run status 2 (PARTIAL RESULT): ${words.partial}"
            if [ "${fail_on_partial}" = "true" ]; then
                echo "\$message; the run fails (--fail_on_partial)" >&2
                exit 1
            fi
            echo "\$message; use --fail_on_partial to fail the run instead"
            ;;
        *)
            echo "virnucpro: run status \$status (FAILED): ${words.failed}" >&2
            exit 1
            ;;
    esac
    """

    stub:
    """
    echo "virnucpro: run status \$(cat ${status_file}) (stub run)"
    """
}
