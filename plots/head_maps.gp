# head_maps: attention maps of example query heads, one per FastGen policy
# that occurs (FastGen Fig. 1 and 4). For each policy the shown head is the
# most typical one: the largest margin min(rec_own - T, T - rec_cheaper).
# Rows = query position i (top to bottom), columns = key position j; a log
# colour scale; white above the diagonal (future positions). Long prompts
# are pooled into blocks (see the data file's header). Short prompts get
# their tokens as axis labels (noenhanced, so _ ^ { } show as themselves).
# Data: head_maps.dat (one index block per panel: j, i, attention).
@HEADER@
data = kv_dir . "head_maps.dat"
panels = @PANELS@              # FastGen rung of each panel (0 special .. 4 full)
panel_layers = @PANEL_LAYERS@  # model layer of each panel
panel_heads = @PANEL_HEADS@    # query head of each panel
npanels = @NPANELS@
ntok = @NTOK@                  # prompt length N
ncells = @NCELLS@              # cells per side after pooling
prompt = @PROMPT@
threshold = @THRESHOLD@
labels = @LABELS@              # 1: token labels on the axes
array tokens[@NLABELS@] = @TOKENS@   # the prompt's token pieces (for labels)
cbmin = 1e-4                   # smallest attention shown; smaller values get its colour
pcolor(k) = word(c_special . " " . c_punct . " " . c_frequent . " " . c_local . " " . c_full, k + 1)
plabel(k) = word("special +punct +frequent +local full", k + 1)
@BEGIN@
sy(y) = 1 - kv_frac + kv_frac * y     # figure y (0..1) -> screen y
ncols = npanels > 1 ? 2 : 1
nrows = (npanels + 1) / 2
left = 0.14
right = 0.83
gapx = 0.06
pw = (right - left - gapx * (ncols - 1)) / ncols    # panel width (figure fraction)
ph = pw * width_in / height_in                     # square panels
gapy = (labels ? 0.55 : 0.45) / height_in
top = 1 - 0.45 / height_in
unset title
if (strlen(kv_title) > 0) { set label 100 kv_title at screen 0.5, sy(1 - 0.12 / height_in) center noenhanced }
set label 101 "query position" at screen 0.025, sy(0.5) center rotate by 90
set label 102 "key position" at screen (left + right) / 2, sy(0.1 / height_in) center
set multiplot
set logscale cb
set cbrange [cbmin:1]
set format cb "10^{%L}"
set cblabel "attention"
set palette defined (0 "#440154", 1 "#3B528B", 2 "#21918C", 3 "#5EC962", 4 "#FDE725")  # viridis
set xrange [-0.5:ntok - 0.5]
set yrange [ntok - 0.5:-0.5]
set tics out nomirror
if (labels) {
    set xtics 1 format ""
    set ytics 1 format ""
    # one label per token: rotated under the x axis, left of the y axis
    do for [t=1:ntok] {
        set label 1000 + t tokens[t] at t - 1, graph -0.03 rotate by 90 right noenhanced font ",4"
        set label 3000 + t tokens[t] at graph -0.03, first t - 1 right noenhanced font ",4"
    }
} else {
    # about four round-numbered tics per axis, so the labels never overlap
    raw = ntok / 4.0
    mag = 10 ** floor(log10(raw))
    tstep = (raw / mag <= 1 ? 1 : raw / mag <= 2 ? 2 : raw / mag <= 5 ? 5 : 10) * mag
    if (tstep < 1) { tstep = 1 }
    set xtics 0, tstep font ",6"
    set ytics 0, tstep font ",6"
}
do for [i=1:npanels] {
    k = word(panels, i) + 0
    col = (i - 1) % ncols
    row = (i - 1) / ncols
    set lmargin at screen left + col * (pw + gapx)
    set rmargin at screen left + col * (pw + gapx) + pw
    set tmargin at screen sy(top - row * (ph + gapy))
    set bmargin at screen sy(top - row * (ph + gapy) - ph)
    # the panel title: the policy in its colour, then layer and head
    # positions on the outer panels only: the inner ones' tic labels would run into their neighbours
    if (!labels) { set format y (col == 0 ? "% h" : ""); set format x (row == nrows - 1 ? "% h" : "") }
    set title sprintf("%s  L%s H%s", plabel(k), word(panel_layers, i), word(panel_heads, i)) \
        tc rgb pcolor(k) noenhanced offset 0, -0.7
    if (i == 1) {
        set colorbox user origin screen right + 0.04, sy(top - (nrows * ph + (nrows - 1) * gapy)) size screen 0.03, kv_frac * (nrows * ph + (nrows - 1) * gapy)
    } else { unset colorbox }
    # SVG viewers smooth embedded images: draw cells as rectangles there
    if (kv_fmt eq "svg" && ncells <= 128) {
        plot data index (i - 1) using 1:2:($3 < 0 ? NaN : ($3 < cbmin ? cbmin : $3)) with image pixels notitle
    } else {
        plot data index (i - 1) using 1:2:($3 < 0 ? NaN : ($3 < cbmin ? cbmin : $3)) with image notitle
    }
    unset label 100
    unset label 101
    unset label 102
}
unset multiplot
@END@
