/*
 * PREPARE: chunk one sample's reads/contigs, translate six frames, keep the stop-free ones and
 * cut them into residue-balanced shards (shards/nucleotide/shard_NNNNN.fa and
 * shards/protein/shard_NNNNN.fa, same stems) that the embedding processes scatter over.
 * The shard lists are always lists (arity 0..*): a sample without any kept frame has none.
 * meta.pairing (samplesheet fastq_1,fastq_2: paired; fastq_1 alone: none) becomes --pairing; a
 * sample without it gets prepare's default (auto).
 */
process PREPARE {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/../../../containers/environment.yml"
    container 'ghcr.io/virnucpro/virnucpro:0.1.0-cpu'

    input:
    tuple val(meta), path(inputs, stageAs: 'input??/*')
    val package_id

    output:
    tuple val(meta), path('prepared'), emit: prepared
    tuple val(meta), path('prepared/shards/nucleotide/shard_*.fa', arity: '0..*'), path('prepared/shards/protein/shard_*.fa', arity: '0..*'), emit: shards
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def pairing = meta.pairing ? "--pairing ${meta.pairing}" : ''
    """
    # virnucpro package ${package_id}
    export CUDA_VISIBLE_DEVICES=''  # no GPU for this step
    virnucpro_stage.py prepare ${inputs} --outdir prepared ${pairing} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(virnucpro_stage.py --version | sed 's/^.* //')
        python: \$(python3 --version | sed 's/^Python //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p prepared/shards/nucleotide prepared/shards/protein
    touch prepared/chunks.fa prepared/frames.nucleotide.fa prepared/frames.protein.faa prepared/manifest.tsv
    touch prepared/shards/nucleotide/shard_00000.fa prepared/shards/protein/shard_00000.fa

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
