# l1_vs_kl: does the analyzer's L1 eviction loss predict what happens to the
# model's predictions? x: kvanalyze's actual L1 loss |y - y^|_1 for the same
# kept sets (continuation rows, mean over compressed layers); y: the mean
# next-token KL measured by kvtrace fidelity; one point per setting, averaged
# over the prompts, coloured by method. Data: l1_vs_kl.dat.
@HEADER@
data  = kv_dir . "l1_vs_kl.dat"
kinds = @KINDS@   # point sets present, one data block each
rho   = @RHO@     # Spearman rank correlation over all settings ("" if < 3)
label(k) = k eq "fastgen" ? "FastGen (T)" : k eq "uniform" ? "Ada-KV uniform" : \
           k eq "adaptive" ? "Ada-KV adaptive" : k eq "streaming" ? "StreamingLLM" : "full cache"
colour(k) = k eq "fastgen" ? c_frequent : k eq "uniform" ? c_uniform : \
            k eq "adaptive" ? c_adaptive : k eq "streaming" ? c_special : c_full
ptype(k) = k eq "fastgen" ? 5 : k eq "uniform" ? 7 : k eq "adaptive" ? 9 : k eq "streaming" ? 13 : 6
@BEGIN@
set xlabel "L1 eviction loss (kvanalyze's actual loss)"
set ylabel "mean next-token KL (nats)"
set xrange [0:*]
set yrange [0:*]
set key top left samplen 1 noenhanced
if (strlen(rho) > 0) { set label 1 rho at graph 0.97, graph 0.06 right enhanced }
plot for [i=1:words(kinds)] data index (i - 1) using 5:2 with points pt ptype(word(kinds, i)) ps 0.7 \
     lc rgb colour(word(kinds, i)) title label(word(kinds, i))
@END@
