# memory_vs_threshold: the KV memory FastGen keeps against the threshold T
# (FastGen's Table 1 as a curve). Top: kept fraction of the full cache
# (traced layers, per KV head). Bottom: share of KV heads on each rung.
# Data: memory_vs_threshold.dat (T, kept fraction, five shares, bytes).
@HEADER@
data = kv_dir . "memory_vs_threshold.dat"
nt   = @NT@   # thresholds (rows of the data)
@BEGIN@
sy(y) = 1 - kv_frac + kv_frac * y     # figure y (0..1) -> screen y
set multiplot title kv_title noenhanced
unset title
set lmargin at screen 0.18
set rmargin at screen 0.74
# top panel: memory kept
set tmargin at screen sy(0.88)
set bmargin at screen sy(0.62)
set xrange [-0.5:nt - 0.5]
set format x ""
set yrange [0:1]
set ytics 0.5
set ylabel "KV kept"
plot data using 0:2 with linespoints lw 1.5 pt 7 ps 0.6 lc rgb c_ink notitle
# bottom panel: policy shares
set tmargin at screen sy(0.55)
set bmargin at screen sy(0.15)
set format x
set style data histograms
set style histogram rowstacked
set style fill solid 1.0 noborder
set boxwidth 0.7 relative
set ytics 0.25
set xlabel "threshold T"
set ylabel "share of KV heads"
set key at screen 0.76, sy(0.55) left top vertical invert reverse Left samplen 1 spacing 0.9 width -2 noenhanced
plot data using 3:xtic(1) title "special" lc rgb c_special, \
     data using 4 title "+punct" lc rgb c_punct, \
     data using 5 title "+frequent" lc rgb c_frequent, \
     data using 6 title "+local" lc rgb c_local, \
     data using 7 title "full" lc rgb c_full
unset multiplot
@END@
