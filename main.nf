#!/usr/bin/env nextflow
/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    virnucpro: viral sequence identification (VirNucPro) on one or many GPUs
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    nextflow run <repo> -profile gpu,singularity --input samples.csv --outdir results

    The run's status (0 ok, 2 partial, 1 failed) is written to
    <outdir>/pipeline_info/run_status.txt and announced when the run completes. Nextflow
    itself exits 0 for status 0 and 2, and 1 for status 1; with --fail_on_partial it also
    exits 1 for status 2. See docs/usage.md.
----------------------------------------------------------------------------------------
*/

include { VIRNUCPRO } from './workflows/virnucpro'

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    PARAMETERS AND INPUT
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

def sequenceSuffixes() {
    return ['.fa', '.fasta', '.fna', '.fas', '.fq', '.fastq']
}

// Command-line values arrive as strings under the strict parser: accept both forms.
def asBoolean(value) {
    if (value instanceof Boolean) {
        return value
    }
    return value.toString().toLowerCase() in ['true', 'yes', '1']
}

def asPositiveInteger(name, value) {
    def text = value.toString()
    if (!(text ==~ /[0-9]+/) || text.toLong() < 1) {
        error("--${name} must be a positive integer, got '${text}'")
    }
    return text.toInteger()
}

def isSequenceFile(name) {
    def plain = name.toLowerCase().endsWith('.gz') ? name.substring(0, name.length() - 3) : name
    return sequenceSuffixes().any { suffix -> plain.toLowerCase().endsWith(suffix) }
}

def sampleNameOf(file_name) {
    def name = file_name.toLowerCase().endsWith('.gz') ? file_name.substring(0, file_name.length() - 3) : file_name
    def dot = name.lastIndexOf('.')
    name = dot > 0 ? name.substring(0, dot) : name
    return name.replaceAll(/[^A-Za-z0-9._-]/, '_')
}

def checkSampleName(name, where) {
    if (!(name ==~ /[A-Za-z0-9][A-Za-z0-9._-]*/)) {
        error("${where}: sample name '${name}' must start with a letter or digit and contain only letters, digits, '.', '_' and '-'")
    }
    if (name in ['pipeline_info', 'inputs', 'model', 'samples']) {
        error("${where}: '${name}' is reserved, please choose another sample name")
    }
}

/*
 * The samples as [ [id: name], [files] ]: from a samplesheet (sample,fasta; rows with the same
 * sample are one sample; relative paths are relative to the samplesheet) or from one FASTA/FASTQ.
 */
def readSamples(input) {
    def source = file(input.toString())
    if (!source.exists()) {
        error("--input: file not found: ${input}")
    }
    if (!source.name.toLowerCase().endsWith('.csv')) {
        if (!isSequenceFile(source.name)) {
            error("--input must be a samplesheet (.csv) or a FASTA/FASTQ file (${sequenceSuffixes().join(', ')}, optionally .gz): ${input}")
        }
        def name = sampleNameOf(source.name)
        checkSampleName(name, "--input ${source.name}")
        return [[[id: name], [source]]]
    }
    def rows = source.splitCsv(header: true, strip: true)
    if (!rows) {
        error("${source.name}: the samplesheet has no rows")
    }
    def missing = ['sample', 'fasta'].findAll { column -> !rows[0].containsKey(column) }
    if (missing) {
        error("${source.name}: missing column(s) ${missing.join(', ')}; the header must be 'sample,fasta'")
    }
    def samples = [:]
    rows.eachWithIndex { row, index ->
        def where = "${source.name} line ${index + 2}"
        def name = row.sample ?: ''
        checkSampleName(name, where)
        def path = row.fasta ?: ''
        if (!path || !isSequenceFile(path)) {
            error("${where}: '${path}' is not a FASTA/FASTQ file name (${sequenceSuffixes().join(', ')}, optionally .gz)")
        }
        def sequences = path.contains('://') || path.startsWith('/') ? file(path) : source.resolveSibling(path)
        if (!sequences.exists()) {
            error("${where}: file not found: ${path}")
        }
        samples[name] = (samples[name] ?: []) + [sequences]
    }
    return samples.collect { name, files -> [[id: name], files] }
}

def validateParameters(parameters) {
    if (!parameters.input) {
        error('--input is required: a samplesheet (sample,fasta) or one FASTA/FASTQ file')
    }
    if (!parameters.outdir) {
        error('--outdir is required')
    }
    if (!(parameters.chunk_length.toString() in ['300', '500'])) {
        error("--chunk_length must be 300 or 500, got '${parameters.chunk_length}'")
    }
    ['shard_size', 'esm_batch_size', 'dna_batch_size', 'classifier_batch_size'].each { name ->
        asPositiveInteger(name, parameters[name])
    }
    if (parameters.esm_layer != null && !(parameters.esm_layer.toString() ==~ /[0-9]+/)) {
        error("--esm_layer must be a layer number, got '${parameters.esm_layer}'")
    }
    def fraction = parameters.virus_fraction.toString()
    if (!fraction.isNumber() || fraction.toDouble() <= 0 || fraction.toDouble() > 1) {
        error("--virus_fraction must be in (0, 1], got '${fraction}'")
    }
    if (!(parameters.precision in ['auto', 'fp32', 'bf16', 'fp16'])) {
        error("--precision must be one of auto, fp32, bf16, fp16, got '${parameters.precision}'")
    }
}

// Parameters the schema does not know are most likely typos: say so, but run.
def warnUnknownParameters(parameters, schema) {
    def known = schema['$defs'].values().collectMany { group -> group['properties'].keySet() as List }
    def unknown = parameters.keySet().findAll { name -> !(name in known) && !name.contains('-') && name == name.toLowerCase() }
    if (unknown) {
        log.warn("Unknown parameter(s), ignored: ${unknown.sort().collect { name -> '--' + name }.join(', ')}")
    }
}

def helpMessage(schema) {
    def lines = ['Usage: nextflow run <repo> -profile <docker|singularity|apptainer|conda>[,gpu] --input samples.csv --outdir results', '']
    schema['$defs'].each { _key, group ->
        lines += [group['title'] + ':']
        group['properties'].each { name, property ->
            def shown = property['default'] != null ? " [default: ${property['default']}]" : ''
            lines += ["  --${name.padRight(24)} ${property['description']}${shown}"]
        }
        lines += ['']
    }
    return lines.join('\n')
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    COMPLETION
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

def runStatusMessage(status, outdir, fail_on_partial) {
    def info = "${outdir}/pipeline_info"
    if (status == 0) {
        return "virnucpro: run status 0 (ok): every sample was classified. Results: ${outdir}"
    }
    if (status == 2) {
        def consequence = fail_on_partial ? 'the run fails (--fail_on_partial)' : 'Nextflow exits 0; use --fail_on_partial to fail the run instead'
        return [
            '=' * 88,
            'virnucpro: run status 2 (PARTIAL RESULT): some sequences could not be classified.',
            "  They are called 'failed' in <sample>/sequence_predictions.tsv; every failure is listed in",
            "  ${info}/failed_files.txt; the status is in ${info}/run_status.txt.",
            "  ${consequence}.",
            '=' * 88
        ].join('\n')
    }
    return [
        '=' * 88,
        'virnucpro: run status 1 (FAILED): no sequence could be classified.',
        "  See ${info}/failed_files.txt and ${info}/run_summary.json.",
        '=' * 88
    ].join('\n')
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    ENTRY WORKFLOW
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

workflow {
    main:
    def schema = new groovy.json.JsonSlurper().parseText(file("${projectDir}/nextflow_schema.json").text)
    def show_help = asBoolean(params.help)
    def fail_on_partial = asBoolean(params.fail_on_partial)
    def outcome = [status: null]

    if (show_help) {
        log.info(helpMessage(schema))
    }
    else {
        validateParameters(params)
        warnUnknownParameters(params, schema)

        VIRNUCPRO(
            channel.fromList(readSamples(params.input)),
            params.esm_model,
            params.dna_model,
            params.classifier ?: '',
            asBoolean(params.test_models)
        )

        VIRNUCPRO.out.versions
            .map { versions -> versions.text }
            .unique()
            .collectFile(name: 'virnucpro_software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)

        // Status 1 always fails the run, status 2 only with --fail_on_partial (the status files are published first).
        VIRNUCPRO.out.status
            .map { status_file -> status_file.text.trim().toInteger() }
            .subscribe { status ->
                outcome.status = status
                if (status == 1 || (status == 2 && fail_on_partial)) {
                    error(runStatusMessage(status, params.outdir, fail_on_partial))
                }
            }
    }

    workflow.onComplete = {
        if (show_help) {
            return
        }
        if (outcome.status == null) {
            log.error('virnucpro: the run stopped before its status was known (see the error above); no run_status.txt was written')
        }
        else if (outcome.status == 0) {
            log.info(runStatusMessage(0, params.outdir, fail_on_partial))
        }
        else {
            log.warn(runStatusMessage(outcome.status, params.outdir, fail_on_partial))
        }
    }
}
