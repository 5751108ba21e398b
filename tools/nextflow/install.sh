#!/usr/bin/env bash
# Install a pinned Nextflow release for development and CI from Maven Central:
#   tools/nextflow/install.sh VERSION DEST
# resolves io.nextflow:nextflow:VERSION and its dependencies with Maven (cached in ~/.m2) into
# DEST/lib and writes the launcher DEST/nextflow: Nextflow's own launcher script does no more than
# run nextflow.cli.Launcher on that classpath with the --add-opens options below. The launcher uses
# a private NXF_HOME (DEST/home) and NXF_OFFLINE=true unless they are set, so nothing is fetched at
# start. Users install Nextflow with its official installer instead (docs/usage.md).
set -euo pipefail
version=${1:?usage: install.sh VERSION DEST}
dest=${2:?usage: install.sh VERSION DEST}
here=$(cd "$(dirname "$0")" && pwd)

# Maven Central lacks nf-lang 25.04.1-25.04.4 (only 25.04.0 was published there); those releases
# run with nf-lang 25.04.0, which serves `nextflow lint` and the strict-syntax parser.
case "$version" in
    25.04.[1-9]) nf_lang=25.04.0 ;;
    *) nf_lang=$version ;;
esac

mkdir -p "$(dirname "$dest")"
dest="$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")"  # Maven resolves relative paths against the pom
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib"
mvn --batch-mode --quiet -Dstyle.color=never --file "$here/pom.xml" \
    -Dnextflow.version="$version" -Dnf-lang.version="$nf_lang" \
    dependency:copy-dependencies -DoutputDirectory="$dest.tmp/lib"

opens=""
for package in java.lang java.io java.nio java.net java.util java.util.concurrent.locks \
    java.util.concurrent.atomic java.nio.file.spi sun.nio.ch sun.nio.fs sun.net.www.protocol.http \
    sun.net.www.protocol.https sun.net.www.protocol.ftp sun.net.www.protocol.file jdk.internal.misc \
    jdk.internal.vm java.util.regex; do
    opens="$opens --add-opens=java.base/$package=ALL-UNNAMED"
done

cat > "$dest.tmp/nextflow" <<LAUNCHER
#!/usr/bin/env bash
# Nextflow $version (nf-lang $nf_lang) from Maven Central, written by tools/nextflow/install.sh.
home=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
export NXF_HOME="\${NXF_HOME:-\$home/home}"
export NXF_OFFLINE="\${NXF_OFFLINE:-true}"
exec "\${JAVA_CMD:-java}" -Dfile.encoding=UTF-8 -Djava.awt.headless=true \${NXF_OPTS:-}$opens \\
    -cp "\$home/lib/*" nextflow.cli.Launcher "\$@"
LAUNCHER
chmod +x "$dest.tmp/nextflow"
"$dest.tmp/nextflow" -version >/dev/null
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "Nextflow $version: $dest/nextflow"
