# concentration: per-head concentration curves (Ada-KV's head-wise
# observation): the attention mass a head's top x% of positions capture,
# averaged over the last rows of each prompt and over prompts. One panel per
# layer shown, one line per query head, coloured by the head's FastGen
# policy (the same colours as policy_by_layer).
# Data: concentration.dat (one index block per layer; percent, mass, head, policy).
@HEADER@
data = kv_dir . "concentration.dat"
present = @PRESENT@   # FastGen rungs present (-1: no policies.json)
layers = @LAYERS@     # model layers shown, one panel each
npanels = @NPANELS@
threshold = @THRESHOLD@
pcolor(k) = k < 0 ? c_ink : word(c_special . " " . c_punct . " " . c_frequent . " " . c_local . " " . c_full, k + 1)
plabel(k) = k < 0 ? "query heads" : word("special +punct +frequent +local full", k + 1)
@BEGIN@
sy(y) = 1 - kv_frac + kv_frac * y     # figure y (0..1) -> screen y
ncols = npanels > 1 ? 2 : 1
nrows = (npanels + 1) / 2
unset title
if (strlen(kv_title) > 0) { set label 100 kv_title at screen 0.5, sy(0.975) center noenhanced }
set label 101 "attention mass captured" at screen 0.03, sy(0.5) center rotate by 90
set label 102 "top positions (% of the prompt, log scale)" at screen 0.55, sy(0.025) center
set multiplot
set logscale x
set xrange [1:50]
set xtics ("1" 1, "2" 2, "5" 5, "10" 10, "20" 20, "50" 50)
set yrange [0:1.02]
set ytics 0.25
set grid lw 0.3 lc rgb "#dddddd"
unset key
# panel grid inside [0.15, 0.97] x [0.13, 0.84] of the figure
pw = (0.97 - 0.15 - 0.06 * (ncols - 1)) / ncols
ph = (0.84 - 0.13 - 0.12 * (nrows - 1)) / nrows
do for [i=1:npanels] {
    col = (i - 1) % ncols
    row = (i - 1) / ncols
    set lmargin at screen 0.15 + col * (pw + 0.06)
    set rmargin at screen 0.15 + col * (pw + 0.06) + pw
    set tmargin at screen sy(0.84 - row * (ph + 0.12))
    set bmargin at screen sy(0.84 - row * (ph + 0.12) - ph)
    set title sprintf("layer %s", word(layers, i)) offset 0, -0.8
    set format x (i > npanels - ncols ? "% h" : "")
    set format y (col == 0 ? "% h" : "")
    plot for [k in present] data index (i - 1) using 1:($4 == k + 0 ? $2 : NaN) with lines lw 0.8 lc rgb pcolor(k + 0) notitle
    unset label 100
    unset label 101
    unset label 102
}
# the legend: an empty plot spanning the figure's width above the panels
unset title
unset border
unset tics
unset grid
set lmargin at screen 0.05
set rmargin at screen 0.95
set tmargin at screen sy(0.95)
set bmargin at screen sy(0.89)
set key center center horizontal maxrows 1 samplen 0.8 width -1 reverse Left noenhanced font ",6"
set yrange [0:1]
plot for [k in present] NaN with lines lw 1.5 lc rgb pcolor(k + 0) title plabel(k + 0)
unset multiplot
@END@
