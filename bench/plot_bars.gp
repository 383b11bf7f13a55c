# gnuplot: llamawire beside a baseline, one pair of bars per row. Called as
#   gnuplot -e "data='FILE'; out='PNG'; title='...'; ylabel='...'; baseline='llama.cpp'" bench/plot_bars.gp
# FILE: one row per case, "label" baseline_value llamawire_value (the label quoted). Above
# each pair: llamawire / baseline.
set terminal pngcairo size 960,540 font "sans,11" noenhanced
set output out
set title title
set ylabel ylabel
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top vertical Left reverse samplen 2
set xtics rotate by -20 left
stats data using 2 nooutput name "A"
stats data using 3 nooutput name "B"
set yrange [0:(A_max > B_max ? A_max : B_max) * 1.12]
# Two bars per cluster, the cluster of row i centred on x = i: the second bar's centre is
# 1/6 to the right.
plot data using 2:xtic(1) title baseline lc rgb "#9ca3af", \
     '' using 3 title "llamawire" lc rgb "#2563eb", \
     '' using ($0 + 1.0 / 6):3:(sprintf("%.2fx", $3 / $2)) with labels offset 0,0.7 font "sans,10" notitle
