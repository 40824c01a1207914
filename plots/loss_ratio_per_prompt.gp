# loss_ratio_per_prompt: per prompt, the adaptive split's actual L1 loss over
# the uniform split's (each the mean over the prompt's layers), at two
# budgets (Ada-KV's per-sample comparison). Below the line at 1 the adaptive
# split loses less.
# Data: loss_ratio_per_prompt.dat (index, prompt id, ratio at B1, ratio at B2).
@HEADER@
data = kv_dir . "loss_ratio_per_prompt.dat"
nb = @NB@           # budgets shown (1 or 2)
b1 = @B1@
b2 = @B2@
np = @NP@           # prompts
xtic_step = @XTIC_STEP@
@BEGIN@
set xrange [-0.5:np - 0.5]
set yrange [0:*]
set xlabel "prompt"
set ylabel "adaptive / uniform L1 loss"
set xtics noenhanced
if (np > 6) { set xtics rotate by 45 right }
set key below horizontal samplen 1 reverse Left noenhanced
plot 1 with lines dt 2 lw 1 lc rgb c_ink notitle, \
     data using 1:3:xtic(int($1) % xtic_step == 0 ? stringcolumn(2) : "") with points pt 7 ps 0.9 lc rgb c_adaptive title sprintf("B = %d", b1), \
     for [k=2:nb] data using 1:4 with points pt 6 ps 1.3 lw 1.2 lc rgb c_adaptive title sprintf("B = %d", b2)
@END@
