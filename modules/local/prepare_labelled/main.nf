/*
 * PREPARE_LABELLED: chunk and translate the files of a labelled sheet and (train mode) split
 * them: prepare's files and shards (the embedding tasks scatter over them unchanged) plus
 * labels.tsv and split.tsv. The files are staged as data/NNNNN/<name> and the task writes the
 * sheet anew with those names (labelled.csv), so it sees them with any executor or container.
 * The shard lists are always lists (arity 0..*): a sheet without any kept frame has none.
 */

// One CSV line of these fields, each quoted only when it holds a comma, a quote or a line break.
def csvLine(values) {
    return values.collect { value -> value ==~ /[^",\r\n]*/ ? value : '"' + value.replace('"', '""') + '"' }.join(',')
}

// A word the shell takes literally.
def shellQuoted(text) {
    return "'" + text.replace("'", "'\\''") + "'"
}

process PREPARE_LABELLED {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    tuple val(meta), val(columns), val(rows), path(files, stageAs: 'data/?????/*', arity: '1..*')
    val package_id

    output:
    path 'prepared', emit: prepared
    tuple val(meta), path('prepared/shards/nucleotide/shard_*.fa', arity: '0..*'), path('prepared/shards/protein/shard_*.fa', arity: '0..*'), emit: shards
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    // The sheet anew: the staged path of each file, then the row's other columns.
    def lines = [columns.join(',')] + rows.withIndex().collect { row, index ->
        csvLine([files[index].toString()] + columns.tail().collect { column -> row[column].toString() })
    }
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    printf '%s\\n' ${lines.collect { line -> shellQuoted(line) }.join(' ')} > labelled.csv
    virnucpro_stage.py prepare-labelled labelled.csv --outdir prepared ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p prepared/shards/nucleotide prepared/shards/protein
    touch prepared/labels.tsv prepared/manifest.tsv
    touch prepared/shards/nucleotide/shard_00000.fa prepared/shards/protein/shard_00000.fa

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
