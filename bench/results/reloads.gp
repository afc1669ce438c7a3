set terminal pngcairo size 1400,900 font ",10"
set output 'reloads.png'
set multiplot layout 2,2 title "Node hello server, 2 workers, 32 clients, 10 reloads (dashed: each reload begins)"
set xlabel 'seconds'
set ylabel 'ok per 100 ms'
set y2label 'failed per 100 ms'
set y2range [0:*]
set yrange [0:*]
set ytics nomirror
set y2tics
set key top left
unset arrow
set arrow from 0.53, graph 0 to 0.53, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.09, graph 0 to 1.09, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.73, graph 0 to 1.73, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.39, graph 0 to 2.39, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.08, graph 0 to 3.08, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.78, graph 0 to 3.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.42, graph 0 to 4.42, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.06, graph 0 to 5.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.70, graph 0 to 5.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.38, graph 0 to 6.38, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 76325"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.53, graph 0 to 0.53, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.27, graph 0 to 2.27, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.61, graph 0 to 4.61, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.78, graph 0 to 6.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.11, graph 0 to 9.11, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.85, graph 0 to 11.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.38, graph 0 to 13.38, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.56, graph 0 to 15.56, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 18.25, graph 0 to 18.25, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 20.82, graph 0 to 20.82, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 233500"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.60, graph 0 to 0.60, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.40, graph 0 to 1.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.25, graph 0 to 2.25, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.03, graph 0 to 3.03, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.83, graph 0 to 3.83, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.55, graph 0 to 4.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.41, graph 0 to 5.41, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.28, graph 0 to 6.28, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.02, graph 0 to 7.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.78, graph 0 to 7.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 22090"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.79, graph 0 to 0.79, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.47, graph 0 to 2.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.21, graph 0 to 4.21, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.14, graph 0 to 6.14, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.90, graph 0 to 7.90, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.79, graph 0 to 9.79, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.38, graph 0 to 11.38, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.33, graph 0 to 13.33, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.13, graph 0 to 15.13, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 16.81, graph 0 to 16.81, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 8 failed of 23364"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
