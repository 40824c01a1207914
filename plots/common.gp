# Shared sections of every kvplot script. kvplot pastes them where a
# template says @HEADER@, @BEGIN@ and @END@; the placeholders @NAME@ etc. are
# filled by kvplot. Everything below the header can be edited in a written
# script to restyle a figure.
#@@ header
# ---- common settings (edit to restyle) ----
name      = @NAME@      # output files: <name>.png / .pdf / .svg next to this script
formats   = @FORMATS@   # any of "png pdf svg"
width_in  = @WIDTH_IN@  # figure width in inches (3.3 = one column of a two-column paper)
height_in = @HEIGHT_IN@ # figure height in inches
dpi       = @DPI@       # PNG pixels per inch
fontname  = "Sans"
fontsize  = 7           # points at the figure's printed size (PDF; the PNG matches it)
title     = @TITLE@     # drawn on PNGs only: PDF and SVG figures leave captions to the paper
# Okabe-Ito colour-blind-safe palette. The same colour means the same thing
# in every kvplot figure: one per FastGen policy rung, one per allocation.
c_special  = "#E69F00"  # special tokens only
c_punct    = "#56B4E9"  # special + punctuation
c_frequent = "#009E73"  # + frequent (heavy-hitter) tokens
c_local    = "#CC79A7"  # + local window
c_full     = "#999999"  # full cache
c_uniform  = "#0072B2"  # uniform budget split
c_adaptive = "#D55E00"  # adaptive (Ada-KV) budget split
c_ink      = "#000000"
# the directory of this script, so that it runs from any directory
kv_dir = ""
if (exists("ARG0") && strlen(ARG0) > 0) {
    kv_i = strlen(ARG0)
    while (kv_i > 0 && ARG0[kv_i:kv_i] ne "/") { kv_i = kv_i - 1 }
    if (kv_i > 0) { kv_dir = ARG0[1:kv_i] }
}
#@@ begin
# One pass per output format; inside figures.pdf (kv_pages set by
# figures.gp) a single pass draws one page of height kv_page_h.
kv_formats = exists("kv_pages") ? "page" : formats
do for [kv_fmt in kv_formats] {
reset
set encoding utf8
kv_font = fontname . "," . fontsize
kv_title = (kv_fmt eq "png" || kv_fmt eq "page") ? title : ""
# a trailing " (model)" goes on a second line, so that long titles fit a column's width
kv_split = strstrt(kv_title, " (")
if (kv_split > 0) { kv_title = kv_title[1:kv_split - 1] . "\n" . kv_title[kv_split + 1:strlen(kv_title)] }
kv_frac = (kv_fmt eq "page") ? height_in / kv_page_h : 1.0
if (kv_fmt eq "png") {
    set terminal pngcairo size int(width_in * dpi + 0.5), int(height_in * dpi + 0.5) enhanced \
        font kv_font fontscale dpi / 90.0 linewidth dpi / 96.0
    set output kv_dir . name . ".png"
}
if (kv_fmt eq "pdf") {
    set terminal pdfcairo size width_in, height_in enhanced font kv_font fontscale 0.75 linewidth 1
    set output kv_dir . name . ".pdf"
}
if (kv_fmt eq "svg") {
    set terminal svg size int(width_in * 72 + 0.5), int(height_in * 72 + 0.5) enhanced font kv_font background "white"
    set output kv_dir . name . ".svg"
}
set size 1, kv_frac
set origin 0, 1 - kv_frac
set title kv_title noenhanced
set border lw 0.5
set tics scale 0.5 nomirror
#@@ end
if (kv_fmt ne "page") { unset output }
}
