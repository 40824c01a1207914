# budget_heatmap: the adaptive (Ada-KV) budget of every (layer, KV head) at
# budget B, as a diverging colour map around the uniform budget: white =
# the uniform share, vermillion = more, blue = fewer (log scale, symmetric).
# Numbers in the cells: entries kept (window included).
# Data: budget_heatmap.dat (kv_head, row, layer, kv_budget, layer_budget, ratio).
@HEADER@
data = kv_dir . "budget_heatmap.dat"
budget = @BUDGET@
nl = @NL@           # layers (rows)
nkv = @NKV@         # KV heads (columns)
cbmax = @CBMAX@     # colour range [1/cbmax, cbmax] of budget / uniform
labels = @LABELS@   # 1: print each cell's budget
ytic_step = @YTIC_STEP@
@BEGIN@
set xrange [-0.5:nkv - 0.5]
set yrange [-0.5:nl - 0.5]
set xtics 1 out
set ytics out
set xlabel "KV head"
set ylabel "layer"
set logscale cb 2
set cbrange [1.0 / cbmax:cbmax]
set cbtics (sprintf("%.2f", 1.0/cbmax) 1.0/cbmax, "1" 1, sprintf("%.2f", cbmax) cbmax)
set cblabel "budget / uniform"
set palette defined (0 c_uniform, 1 "white", 2 c_adaptive)
set tics nomirror
# "pixels": one rectangle per cell, so that no viewer smooths the cells
plot data using 1:2:6:ytic(int($2) % ytic_step == 0 ? stringcolumn(3) : "") with image pixels notitle, \
     for [k=1:labels] data using 1:2:(sprintf("%d", $4)) with labels font ",5" notitle
@END@
