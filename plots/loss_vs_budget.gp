# loss_vs_budget: Ada-KV's eviction loss against the budget B, log-log.
# Solid lines: the actual L1 loss |y - y^|_1; dashed: the theoretical bound
# 2C sum_h (1 - F_h). Blue: uniform split of the layer's budget, vermillion:
# adaptive split. Lines are the mean over the (prompt, layer) rows where B
# evicts something; the band is the interquartile range of the actual loss.
# Under each budget: how many of the prompts are longer than it (only those
# are evicted from and enter the means).
# Data: loss_vs_budget.dat (budget, then mean/q25/q75/bound per allocation).
@HEADER@
data = kv_dir . "loss_vs_budget.dat"
band_opacity = 0.2
xmin = @XMIN@
xmax = @XMAX@
@BEGIN@
set logscale xy
set xlabel "budget B per KV head / prompts longer than B" offset 0,-0.7
set ylabel "eviction loss (L1)"
set format y "10^{%L}"
set xrange [xmin:xmax]
set xtics @XTICS@ nomirror
unset mxtics
set key below horizontal maxrows 2 samplen 2 width 1 reverse Left noenhanced
set style fill transparent solid band_opacity noborder
plot data using 1:3:4 with filledcurves lc rgb c_uniform notitle, \
     data using 1:7:8 with filledcurves lc rgb c_adaptive notitle, \
     data using 1:2 with linespoints lw 1.5 pt 7 ps 0.4 lc rgb c_uniform title "uniform, actual", \
     data using 1:6 with linespoints lw 1.5 pt 7 ps 0.4 lc rgb c_adaptive title "adaptive, actual", \
     data using 1:5 with lines lw 1.5 dt 2 lc rgb c_uniform title "uniform, bound", \
     data using 1:9 with lines lw 1.5 dt 2 lc rgb c_adaptive title "adaptive, bound"
@END@
