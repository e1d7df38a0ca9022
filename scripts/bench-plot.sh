#!/usr/bin/env bash
# bench-plot.sh DIR: draws DIR/timeline.svg from the timeline of `make bench`
# and DIR/timeline.png (DIR/timeline.csv, DIR/timeline-phases.csv,
# DIR/timeline-summary.csv; see scripts/bench.sh) with gnuplot: one panel per driver, the same time axis,
# requested size, plugged size and MemTotal, and the sequence's steps as
# dotted lines.
set -euo pipefail
dir=$1
csv=$dir/timeline.csv phases=$dir/timeline-phases.csv summary=$dir/timeline-summary.csv
for f in "$csv" "$phases" "$summary"; do [ -s "$f" ] || { echo "bench-plot: no $f" >&2; exit 1; }; done

# Both panels share the x range: the longer of the two runs.
tmax=$(awk -F, 'NR > 1 && $2 > m { m = $2 } END { printf "%d", m + 5 }' "$csv")
ymax=$(awk -F, 'NR > 1 { for (i = 3; i <= 5; i++) if ($i > m) m = $i } END { printf "%d", m / 1024 + 2 }' "$csv")

panel() { # DRIVER TITLE
    local drv=$1 title=$2 n=0 t text oom workload
    oom=$(awk -F, -v d="$drv" '$1 == d { print $2 }' "$summary")
    workload=$(awk -F, -v d="$drv" '$1 == d { print $3 }' "$summary")
    echo "unset arrow; unset label"
    echo "set title \"$title: workload $workload, $oom OOM kills\""
    while IFS=, read -r d t text; do
        [ "$d" = "$drv" ] || continue
        n=$((n + 1))
        echo "set arrow $n from $t, graph 0 to $t, graph 1 nohead dashtype 3 linecolor rgb \"#888888\""
        echo "set label $n \"$text\" at $t, graph 0.97 rotate by 90 right offset -0.6,0 font \",8\" textcolor rgb \"#444444\""
    done < <(tail -n +2 "$phases")
    cat <<EOF
plot "$csv" every ::1 using 2:(strcol(1) eq "$drv" ? \$3 / 1024.0 : NaN) with lines dashtype 2 linewidth 2 linecolor rgb "#000000" title "requested size", \\
     "" every ::1 using 2:(strcol(1) eq "$drv" ? \$4 / 1024.0 : NaN) with lines linewidth 2 linecolor rgb "#1f5fbf" title "plugged size", \\
     "" every ::1 using 2:(strcol(1) eq "$drv" ? \$5 / 1024.0 : NaN) with lines linewidth 2 linecolor rgb "#2a9d3a" title "MemTotal"
EOF
}

body=$(
    cat <<EOF
set datafile separator ","
set datafile missing NaN
set multiplot layout 2,1 title "virtio-mem: one resize sequence per driver (x86_64 TCG guest, 2G + 8G device, 2M blocks)"
set xrange [0:$tmax]
set yrange [0:$ymax]
set ylabel "GiB"
set grid ytics linecolor rgb "#dddddd"
set key outside right top vertical box
EOF
    panel virtio_mem "C driver (virtio_mem)"
    echo 'set xlabel "seconds"'
    panel virtio_mem_rust "Rust driver (virtio_mem_rust)"
    echo "unset multiplot"
)
# The same plot twice: SVG for the README, PNG for anything that shows no SVG.
{
    echo "set terminal svg size 1000,760 dynamic noenhanced font \"sans,11\" background rgb \"white\""
    echo "set output \"$dir/timeline.svg\""
    echo "$body"
    echo "set terminal pngcairo size 1000,760 noenhanced font \"sans,10\" background rgb \"white\""
    echo "set output \"$dir/timeline.png\""
    echo "$body"
} >"$dir/timeline.gp"
gnuplot "$dir/timeline.gp"
echo "bench: $dir/timeline.svg, $dir/timeline.png"
