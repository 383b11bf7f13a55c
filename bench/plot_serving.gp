# gnuplot: serving figures from bench/serving.sh. Called as
#   gnuplot -e "data='serving.dat'; out='DIR'" bench/plot_serving.gp
# serving.dat: one block per configuration (model and weights), blocks separated by two
# blank lines; a block's first line is its title in quotes, then one line per client count:
# clients aggregate_tok_s decode_tok_s ttft_p50 ttft_p99 itl_p50 itl_p99 (medians over the
# rounds).
set terminal pngcairo size 900,560 font "sans,11" noenhanced
set key top left box opaque
set grid
set logscale x 2
set xlabel "concurrent clients"
set xtics (1, 4, 16, 64)
set xrange [0.8:80]
stats data using 1 nooutput
n = STATS_blocks

set output out . "/serving-throughput.png"
set title "Aggregate tokens/s against clients (llamawire bench, loopback, 2 cores)"
set ylabel "tokens/s (generated, all clients)"
plot for [i=0:n-1] data index i using 1:2 with linespoints lw 2 pt 7 title columnheader(1)

set output out . "/serving-latency.png"
set title "Latency percentiles against clients"
set ylabel "milliseconds"
set logscale y
set multiplot layout 1,2
set title "time to first token (p50 solid, p99 dashed)"
plot for [i=0:n-1] data index i using 1:4 with linespoints lw 2 pt 7 lc i+1 title columnheader(1), \
     for [i=0:n-1] data index i using 1:5 with linespoints lw 1 dt 2 pt 6 lc i+1 notitle
set title "inter-token latency (p50 solid, p99 dashed)"
plot for [i=0:n-1] data index i using 1:6 with linespoints lw 2 pt 7 lc i+1 title columnheader(1), \
     for [i=0:n-1] data index i using 1:7 with linespoints lw 1 dt 2 pt 6 lc i+1 notitle
unset multiplot
