#!/usr/bin/env nextflow
/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    virnucpro: viral sequence identification (VirNucPro) on one or many GPUs
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    nextflow run <repo> -profile gpu,singularity --input samples.csv --outdir results

    The run's status (0 ok, 2 partial, 1 failed) is written by SUMMARIZE to
    <outdir>/pipeline_info/run_status.txt; the last step, RUN_STATUS, fails the run (exit 1)
    on status 1, and on status 2 with --fail_on_partial, after every result is published.
    See docs/usage.md.
----------------------------------------------------------------------------------------
*/

include { VIRNUCPRO } from './workflows/virnucpro'
include { VIRNUCPRO_TRAINING } from './workflows/training'

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

def fastqSuffixes() {
    return ['.fq', '.fastq']
}

def isFastqFile(name) {
    def plain = withoutCompressionSuffix(name)
    return fastqSuffixes().any { suffix -> plain.toLowerCase().endsWith(suffix) }
}

// One file of a samplesheet row, checked as assets/schema_input.json checks it; relative paths are relative to the samplesheet.
def samplesheetFile(source, path, where, fastq) {
    def kinds = fastq ? fastqSuffixes() : sequenceSuffixes()
    if (!path || !(fastq ? isFastqFile(path) : isSequenceFile(path))) {
        error("${where}: '${path}' is not a ${fastq ? 'FASTQ' : 'FASTA/FASTQ'} file name (${kinds.join(', ')}, optionally ${compressionSuffixes().join(', ')})")
    }
    // The staged file names reach the PREPARE command line unquoted (assets/schema_input.json forbids whitespace too).
    if (path =~ /\s/) {
        error("${where}: '${path}' contains whitespace; rename or link the file to a path without spaces")
    }
    def sequences = path.contains('://') || path.startsWith('/') ? file(path) : source.resolveSibling(path)
    if (!sequences.exists()) {
        error("${where}: file not found: ${path}")
    }
    return sequences
}

def rowKind(pairing) {
    return pairing == 'paired' ? 'paired (fastq_1,fastq_2)' : pairing == 'none' ? 'single-end (fastq_1 only)' : 'fasta'
}

/*
 * The samples as [ [id: name, pairing: paired|none (FASTQ columns only)], [files] ]: from a
 * samplesheet (sample,fasta or sample,fastq_1,fastq_2 with fastq_2 optional; rows with the same
 * sample are one sample, a paired sample's files in the order R1 R2 [R1 R2 ...]; relative paths
 * are relative to the samplesheet) or from one FASTA/FASTQ.
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
    def columns = rows[0].keySet()
    if (!('sample' in columns) || !('fasta' in columns || 'fastq_1' in columns)) {
        error("${source.name}: the header must be 'sample,fasta' or 'sample,fastq_1,fastq_2' (fastq_2 optional)")
    }
    def samples = [:]
    def pairings = [:]
    rows.eachWithIndex { row, index ->
        def where = "${source.name} line ${index + 2}"
        def name = row.sample ?: ''
        checkSampleName(name, where)
        def fasta = row.fasta ?: ''
        def mates = [row.fastq_1 ?: '', row.fastq_2 ?: '']
        if (mates[1] && !mates[0]) {
            error("${where}: fastq_2 without fastq_1; give the first mate in fastq_1")
        }
        if (fasta && mates[0]) {
            error("${where}: both fasta and fastq_1; give one of them per row")
        }
        if (!fasta && !mates[0]) {
            error("${where}: no file; give fasta, or fastq_1 (and fastq_2 for paired reads)")
        }
        def pairing = fasta ? null : mates[1] ? 'paired' : 'none'
        if (samples.containsKey(name) && pairings[name] != pairing) {
            error("${where}: sample '${name}' mixes ${rowKind(pairings[name])} and ${rowKind(pairing)} rows; give each kind its own sample name")
        }
        def files = pairing ? mates.findAll { mate -> mate }.collect { mate -> samplesheetFile(source, mate, where, true) } : [samplesheetFile(source, fasta, where, false)]
        samples[name] = (samples[name] ?: []) + files
        pairings[name] = pairing
    }
    return samples.collect { name, files -> [pairings[name] ? [id: name, pairing: pairings[name]] : [id: name], files] }
}

/*
 * --mode train / evaluate: the labelled sheet (path,label[,group][,date]; CSV, or TSV when its
 * header holds a tab; relative paths are relative to the sheet) as [ meta, [ columns ], [ rows ],
 * [ files ] ], checked as `virnucpro prepare-labelled` checks it, so that a bad sheet is one line
 * here instead of a failed task. PREPARE_LABELLED stages the files and writes the sheet anew.
 */
def readLabelledSheet(input, mode) {
    def source = file(input.toString())
    if (!source.exists()) {
        error("--input: file not found: ${input}")
    }
    def lines = source.readLines().findAll { line -> line.trim() }
    if (!lines) {
        error("${source.name}: empty sheet (expected a header: path,label[,group][,date])")
    }
    def separator = lines[0].contains('\t') ? '\t' : ','
    def table = source.splitCsv(sep: separator, strip: true).findAll { values -> values.any { value -> value } }
    def columns = table[0].collect { name -> name.toLowerCase().replaceFirst(/^\uFEFF/, '') }
    def known = ['path', 'label', 'group', 'date']
    def missing = ['path', 'label'].findAll { name -> !(name in columns) }
    if (missing) {
        error("${source.name}: missing column '${missing[0]}' (header: ${columns.join(',')}; expected path,label[,group][,date])")
    }
    def unknown = columns.findAll { name -> !(name in known) }
    if (unknown) {
        error("${source.name}: unknown column '${unknown[0]}' (known: ${known.join(', ')})")
    }
    if (columns.unique(false).size() != columns.size()) {
        error("${source.name}: a column appears twice in the header (${columns.join(',')})")
    }
    if (table.size() < 2) {
        error("${source.name}: no files listed (only a header)")
    }
    def ordered = ['path'] + known.tail().findAll { name -> name in columns }
    def rows = []
    def files = []
    table.tail().eachWithIndex { values, index ->
        def where = "${source.name} line ${index + 2}"
        if (values.size() != columns.size()) {
            error("${where}: ${values.size()} fields, the header has ${columns.size()}")
        }
        def row = [columns, values].transpose().collectEntries { name, value -> [name, value ?: ''] }
        if (!row.path) {
            error("${where}: empty path")
        }
        if (!(row.label.toLowerCase() in ['virus', 'other', 'others'])) {
            error("${where}: unknown label '${row.label}' (virus or other)")
        }
        if (row.date && !(row.date ==~ /[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?/)) {
            error("${where}: date '${row.date}' is not ISO YYYY-MM-DD (or YYYY-MM, YYYY)")
        }
        def sequences = row.path.contains('://') || row.path.startsWith('/') ? file(row.path) : source.resolveSibling(row.path)
        if (!sequences.exists()) {
            error("${where}: file not found: ${row.path}")
        }
        if (sequences.isDirectory()) {
            error("${where}: ${row.path} is a directory, not a sequence file")
        }
        rows += [ordered.collectEntries { name -> [name, row[name]] }]
        files += [sequences]
    }
    def absent = ['virus', 'other'].findAll { label -> !rows.any { row -> row.label.toLowerCase().startsWith(label) } }
    if (mode == 'train' && absent) {
        error("${source.name}: no file labelled ${absent[0]} (training needs both virus and other)")
    }
    return [[id: mode], ordered, rows, files]
}

// Rules between parameters that the schema cannot say; one error naming every problem.
def modeProblems(parameters) {
    def reference = !asBoolean(parameters.test_models) && (parameters.classifier == null || parameters.classifier.toString() in ['300', '500'])
    def problems = []
    if (parameters.mode != 'train' && reference && !(parameters.chunk_length.toString() in ['300', '500'])) {
        problems += ["--chunk_length must be one of 300, 500, got '${parameters.chunk_length}' (the reference classifiers; a classifier trained with --mode train or `virnucpro train` takes any)"]
    }
    if (parameters.mode == 'train' && parameters.classifier != null) {
        problems += ['--classifier is not used by --mode train (it trains one); leave it out']
    }
    if (parameters.before != null && parameters.split != 'date') {
        problems += ['--before is only used by --split date']
    }
    if (parameters.split == 'date' && parameters.before == null) {
        problems += ['--split date needs --before YYYY-MM-DD']
    }
    if (parameters.before != null && !(parameters.before.toString() ==~ /[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?/)) {
        problems += ["--before must be a date YYYY-MM-DD (or YYYY-MM, YYYY), got '${parameters.before}'"]
    }
    def fractions = [parameters.test_fraction, parameters.validation_fraction].collect { value -> value.toString().toDouble() }
    if (parameters.mode == 'train' && (fractions.sum() >= 1 || fractions.any { value -> value >= 1 })) {
        problems += ["--test_fraction ${parameters.test_fraction} and --validation_fraction ${parameters.validation_fraction} must be below 1 together (the rest trains)"]
    }
    if (parameters.mode == 'train' && parameters.split != 'date' && fractions[0] == 0) {
        problems += ['--test_fraction 0: nothing would be held out to test on (only --split date takes its test part by date)']
    }
    return problems
}

// Every parameter of nextflow_schema.json, with its JSON schema.
def schemaProperties(schema) {
    return schema['$defs'].values().collectEntries { group -> group['properties'] }
}

// snake_case of a parameter written in kebab-case (24.10 keeps it) or camelCase (25.04 turns kebab-case into it).
def snakeCase(name) {
    return name.replace('-', '_').replaceAll(/([a-z0-9])([A-Z])/, '$1_$2').toLowerCase()
}

// Parameters the schema does not know: a typo, or a kebab-case spelling Nextflow would silently ignore.
def unknownParameterProblems(parameters, schema) {
    def known = schemaProperties(schema).keySet()
    return parameters.keySet().findAll { name -> !(name in known) }.sort().collect { name ->
        def snake = snakeCase(name)
        snake in known && snake != name
            ? "--${name} is not a parameter: write it --${snake}"
            : "--${name} is not a parameter of this pipeline (nextflow run <repo> --help lists them)"
    }
}

// Check every parameter against its type, enum and bounds in nextflow_schema.json; one error naming every problem.
def validateParameters(parameters, schema) {
    def required = schema['$defs'].values().collectMany { group -> group['required'] ?: [] }
    def problems = unknownParameterProblems(parameters, schema)
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
        else if (name == 'publish_dir_mode' && text == 'move') {
            problems += ['--publish_dir_mode move is not supported: SUMMARIZE reads the sample folders after they are published; use copy (the default), link or symlink']
        }
        else if (property['enum'] && !(text in property['enum'].collect { v -> v.toString() })) {
            problems += ["--${name} must be one of ${property['enum'].join(', ')}, got '${text}'"]
        }
        // --input: readSamples names the exact problem of a path
        else if (property['pattern'] && name != 'input' && !(text ==~ property['pattern'])) {
            problems += ["--${name} ${property['errorMessage'] ?: "must match ${property['pattern']}"}, got '${text}'"]
        }
        else if (numeric && ((property['minimum'] != null && text.toDouble() < property['minimum']) || (property['exclusiveMinimum'] != null && text.toDouble() <= property['exclusiveMinimum']) || (property['maximum'] != null && text.toDouble() > property['maximum']))) {
            problems += ["--${name} is out of range: ${text}"]
        }
    }
    if (!problems) {
        problems += modeProblems(parameters)
    }
    if (problems) {
        error(problems.join('; '))
    }
}

def helpMessage(schema) {
    def lines = ['Usage: nextflow run <repo> -profile <docker|singularity|apptainer|podman|conda>[,gpu] --input samples.csv --outdir results', '']
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
 * A fingerprint of the package the tasks import (bin/virnucpro_stage.py runs the clone's
 * package): it is an input of every process, so -resume re-runs the tasks when the package
 * changes, not only when bin/ does. Inside a container the image name plays that part.
 */
def packageFingerprint(root) {
    def sources = files("${root}/virnucpro/**.py") + files("${root}/pyproject.toml")
    def entries = sources.sort { path -> path.toString() }.collect { path -> "${root.relativize(path)} ${path.text.md5()}" }
    return entries.join('\n').md5()
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

    if (show_help) {
        log.info(helpMessage(schema))
    }
    else {
        validateParameters(params, schema)

        if (params.mode == 'predict') {
            VIRNUCPRO(
                channel.fromList(readSamples(params.input)),
                params.esm_model,
                params.dna_model,
                params.classifier ?: params.chunk_length.toString(),
                asBoolean(params.test_models),
                asBoolean(params.fail_on_partial),
                packageFingerprint(projectDir),
                params.outdir,
                asBoolean(params.skip_multiqc)
            )
            ch_message = VIRNUCPRO.out.message
            ch_versions = VIRNUCPRO.out.versions
        }
        else {
            VIRNUCPRO_TRAINING(
                channel.of(readLabelledSheet(params.input, params.mode)),
                params.mode,
                params.esm_model,
                params.dna_model,
                params.mode == 'evaluate' ? (params.classifier ?: params.chunk_length.toString()) : '',
                asBoolean(params.test_models),
                asBoolean(params.fail_on_partial),
                packageFingerprint(projectDir),
                params.outdir
            )
            ch_message = VIRNUCPRO_TRAINING.out.message
            ch_versions = VIRNUCPRO_TRAINING.out.versions
        }

        ch_message.view { message -> message.trim() }

        ch_versions
            .map { versions -> versions.text }
            .unique()
            .collectFile(name: 'virnucpro_software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
    }
}
