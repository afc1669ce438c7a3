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
set arrow from 0.51, graph 0 to 0.51, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.96, graph 0 to 0.96, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.62, graph 0 to 1.62, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.17, graph 0 to 2.17, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.78, graph 0 to 2.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.44, graph 0 to 3.44, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.10, graph 0 to 4.10, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.82, graph 0 to 4.82, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.44, graph 0 to 5.44, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.09, graph 0 to 6.09, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 86453"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.54, graph 0 to 0.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.81, graph 0 to 3.81, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.76, graph 0 to 6.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.95, graph 0 to 11.95, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.51, graph 0 to 15.51, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.86, graph 0 to 17.86, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 20.40, graph 0 to 20.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 22.71, graph 0 to 22.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 24.06, graph 0 to 24.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 25.92, graph 0 to 25.92, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 229503"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.60, graph 0 to 0.60, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.32, graph 0 to 1.32, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.90, graph 0 to 1.90, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.51, graph 0 to 2.51, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.16, graph 0 to 3.16, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.78, graph 0 to 3.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.40, graph 0 to 4.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.04, graph 0 to 5.04, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.71, graph 0 to 5.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.36, graph 0 to 6.36, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 23474"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 1.06, graph 0 to 1.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.06, graph 0 to 5.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.39, graph 0 to 8.39, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.02, graph 0 to 10.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.76, graph 0 to 11.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.65, graph 0 to 15.65, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 19.75, graph 0 to 19.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 24.59, graph 0 to 24.59, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 28.09, graph 0 to 28.09, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 33.88, graph 0 to 33.88, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 15 failed of 24045"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
