# fidelity_vs_memory: how far the model's next-token predictions move
# (mean KL(reference || compressed) over the continuation positions, nats)
# against the KV memory kept (fraction of the context's cache), one point per
# setting of kvtrace fidelity, averaged over the prompts; one curve each for
# FastGen's thresholds, Ada-KV's uniform and adaptive budgets, StreamingLLM.
# Data: fidelity_vs_memory.dat (one block per curve, in the order of kinds).
@HEADER@
data  = kv_dir . "fidelity_vs_memory.dat"
kinds = @KINDS@   # curves present, one data block each
label(k) = k eq "fastgen" ? "FastGen (T)" : k eq "uniform" ? "Ada-KV uniform" : \
           k eq "adaptive" ? "Ada-KV adaptive" : k eq "streaming" ? "StreamingLLM" : "full cache"
colour(k) = k eq "fastgen" ? c_frequent : k eq "uniform" ? c_uniform : \
            k eq "adaptive" ? c_adaptive : k eq "streaming" ? c_special : c_full
ptype(k) = k eq "fastgen" ? 5 : k eq "uniform" ? 7 : k eq "adaptive" ? 9 : k eq "streaming" ? 13 : 6
@BEGIN@
set xlabel "KV memory kept (fraction of the context cache)"
set ylabel "mean next-token KL (nats)"
set xrange [0:1.02]
set yrange [0:*]
set key top right samplen 2 noenhanced
plot for [i=1:words(kinds)] data index (i - 1) using 1:2 with linespoints lw 1.5 pt ptype(word(kinds, i)) ps 0.6 \
     lc rgb colour(word(kinds, i)) title label(word(kinds, i))
@END@
