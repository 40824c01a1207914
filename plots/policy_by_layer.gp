# policy_by_layer: FastGen's policy distribution per layer (FastGen Fig. 3).
# Stacked bars: x = model layer, y = share of the layer's heads whose
# cheapest sufficient rung (aggregated recovery >= T) is each ladder rung.
# Data: policy_by_layer.dat (layer, one share column per rung, head count).
@HEADER@
threshold = @THRESHOLD@  # T the data was computed at (kvplot --threshold)
heads     = @HEADS@
xtic_step = @XTIC_STEP@  # label every n-th layer
data      = kv_dir . "policy_by_layer.dat"
@BEGIN@
set style data histograms
set style histogram rowstacked
set style fill solid 1.0 noborder
set boxwidth 0.85 relative
set yrange [0:1]
set ytics 0.25
set xlabel "layer"
set ylabel "share of " . heads noenhanced
set key outside right top vertical invert reverse Left samplen 1 spacing 0.9 width -2 noenhanced
plot data using 2:xtic(int($1) % xtic_step == 0 ? stringcolumn(1) : "") title "special" lc rgb c_special, \
     data using 3 title "+punct" lc rgb c_punct, \
     data using 4 title "+frequent" lc rgb c_frequent, \
     data using 5 title "+local" lc rgb c_local, \
     data using 6 title "full" lc rgb c_full
@END@
