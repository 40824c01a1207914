# loss_ratio_per_prompt: per prompt, the adaptive split's actual L1 loss over
# the uniform split's (each the mean over the prompt's layers), at two
# budgets (Ada-KV's per-sample comparison). Left of the line at 1 the
# adaptive split loses less. One row per prompt, ids on the left.
# Data: loss_ratio_per_prompt.dat (index, prompt id, ratio at B1, ratio at B2).
@HEADER@
data = kv_dir . "loss_ratio_per_prompt.dat"
nb = @NB@           # budgets shown (1 or 2)
b1 = @B1@
b2 = @B2@
np = @NP@           # prompts
ytic_step = @YTIC_STEP@  # label every n-th prompt
@BEGIN@
set yrange [np - 0.5:-0.5]
set xrange [0:*]
set xlabel "adaptive / uniform L1 loss"
set ytics noenhanced
set grid ytics lw 0.3 lc rgb "#dddddd"
set key below horizontal samplen 1 reverse Left noenhanced
set arrow from 1, graph 0 to 1, graph 1 nohead dt 2 lw 1 lc rgb c_ink
plot data using 3:1:ytic(int($1) % ytic_step == 0 ? stringcolumn(2) : "") with points pt 7 ps 0.9 lc rgb c_adaptive title sprintf("B = %d", b1), \
     for [k=2:nb] data using 4:1 with points pt 6 ps 1.3 lw 1.2 lc rgb c_adaptive title sprintf("B = %d", b2)
@END@
