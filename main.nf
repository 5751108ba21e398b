#!/usr/bin/env nextflow
/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    virnucpro: viral sequence identification (VirNucPro) on one or many GPUs
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    nextflow run <repo> -profile gpu,singularity --input samples.csv --outdir results

    The run's status (0 ok, 2 partial, 1 failed) is written by its last step, SUMMARIZE, to
    <outdir>/pipeline_info/run_status.txt and announced when the run completes. Nextflow
    itself exits 0 for status 0 and 2, and 1 for status 1; with --fail_on_partial it also
    exits 1 for status 2. A task error that stops the run before SUMMARIZE (invalid input, a
    model that cannot be used) leaves no status file; Nextflow then exits 1. See docs/usage.md.
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

// Compressed inputs the reader recognises by content (virnucpro.seqio); the suffix is optional to it, not here.
def compressionSuffixes() {
    return ['.gz', '.bz2', '.xz']
}

def withoutCompressionSuffix(name) {
    def suffix = compressionSuffixes().find { candidate -> name.toLowerCase().endsWith(candidate) }
    return suffix ? name.substring(0, name.length() - suffix.length()) : name
}

def isSequenceFile(name) {
    def plain = withoutCompressionSuffix(name)
    return sequenceSuffixes().any { suffix -> plain.toLowerCase().endsWith(suffix) }
}

def sampleNameOf(file_name) {
    def name = withoutCompressionSuffix(file_name)
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
            error("--input must be a samplesheet (.csv) or a FASTA/FASTQ file (${sequenceSuffixes().join(', ')}, optionally ${compressionSuffixes().join(', ')}): ${input}")
        }
        if (source.name =~ /\s/) {
            error("--input: '${source.name}' contains whitespace; rename or link the file to a name without spaces")
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
            error("${where}: '${path}' is not a FASTA/FASTQ file name (${sequenceSuffixes().join(', ')}, optionally ${compressionSuffixes().join(', ')})")
        }
        // The staged file names reach the PREPARE command line unquoted (assets/schema_input.json forbids whitespace too).
        if (path =~ /\s/) {
            error("${where}: '${path}' contains whitespace; rename or link the file to a path without spaces")
        }
        def sequences = path.contains('://') || path.startsWith('/') ? file(path) : source.resolveSibling(path)
        if (!sequences.exists()) {
            error("${where}: file not found: ${path}")
        }
        samples[name] = (samples[name] ?: []) + [sequences]
    }
    return samples.collect { name, files -> [[id: name], files] }
}

// Every parameter of nextflow_schema.json, with its JSON schema.
def schemaProperties(schema) {
    return schema['$defs'].values().collectEntries { group -> group['properties'] }
}

// Check every parameter against its type, enum and bounds in nextflow_schema.json.
def validateParameters(parameters, schema) {
    def required = schema['$defs'].values().collectMany { group -> group['required'] ?: [] }
    def problems = []
    schemaProperties(schema).each { name, property ->
        def value = parameters[name]
        if (value == null || value == '') {
            problems += name in required ? ["--${name} is required"] : []
            return
        }
        def text = value.toString()
        def type = property['type']
        def numeric = type in ['integer', 'number'] && text.isNumber() && (type == 'number' || text.isLong())
        if ((type in ['integer', 'number'] && !numeric) || (type == 'boolean' && !(text.toLowerCase() in ['true', 'false']))) {
            problems += ["--${name} must be a ${type}, got '${text}'"]
        }
        else if (property['enum'] && !(text in property['enum'].collect { v -> v.toString() })) {
            problems += ["--${name} must be one of ${property['enum'].join(', ')}, got '${text}'"]
        }
        else if (numeric && ((property['minimum'] != null && text.toDouble() < property['minimum']) || (property['exclusiveMinimum'] != null && text.toDouble() <= property['exclusiveMinimum']) || (property['maximum'] != null && text.toDouble() > property['maximum']))) {
            problems += ["--${name} is out of range: ${text}"]
        }
    }
    if (problems) {
        error(problems.join('\n'))
    }
}

// Parameters the schema does not know are most likely typos: say so, but run.
def warnUnknownParameters(parameters, schema) {
    def known = schemaProperties(schema).keySet()
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
 * Copy the run's status files into <outdir>/pipeline_info now. publishDir copies them too, but
 * in the background: a run that is about to fail (error() aborts the session, which stops
 * publishing) must not lose the files that say why.
 */
def publishRunStatus(status_file, outdir) {
    def info = file("${outdir}/pipeline_info")
    try {
        info.mkdirs()
        ['run_status.txt', 'run_summary.json', 'failed_files.txt'].each { name ->
            def source = status_file.resolveSibling(name)
            if (source.exists()) {
                source.copyTo(info.resolve(name))
            }
        }
    }
    catch( Exception e ) {
        // publishDir may be moving the same files right now: its copy is the one that counts then
        log.warn("virnucpro: could not copy the run status files to ${info} (${e.message}); see the SUMMARIZE task's work directory")
    }
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
        validateParameters(params, schema)
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

        // Status 1 always fails the run, status 2 only with --fail_on_partial, after the status
        // files are copied. SUMMARIZE runs once: `outcome` has one writer, read by onComplete.
        VIRNUCPRO.out.status
            .subscribe { status_file ->
                def status = status_file.text.trim().toInteger()
                outcome.put('status', status)
                if (status == 1 || (status == 2 && fail_on_partial)) {
                    publishRunStatus(status_file, params.outdir)
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
