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
set arrow from 0.52, graph 0 to 0.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.98, graph 0 to 0.98, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.49, graph 0 to 1.49, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.02, graph 0 to 2.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.52, graph 0 to 2.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.13, graph 0 to 3.13, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.59, graph 0 to 3.59, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.23, graph 0 to 4.23, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.70, graph 0 to 4.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.22, graph 0 to 5.22, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 75038"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.53, graph 0 to 0.53, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.75, graph 0 to 2.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.78, graph 0 to 4.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.55, graph 0 to 6.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.68, graph 0 to 8.68, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.54, graph 0 to 10.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.37, graph 0 to 12.37, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.90, graph 0 to 13.90, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.03, graph 0 to 15.03, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.24, graph 0 to 17.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 229952"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.62, graph 0 to 0.62, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.18, graph 0 to 1.18, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.67, graph 0 to 1.67, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.24, graph 0 to 2.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.77, graph 0 to 2.77, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.35, graph 0 to 3.35, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.93, graph 0 to 3.93, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.57, graph 0 to 4.57, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.19, graph 0 to 5.19, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.76, graph 0 to 5.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 21203"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.71, graph 0 to 0.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.71, graph 0 to 2.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.47, graph 0 to 4.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.02, graph 0 to 6.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.58, graph 0 to 7.58, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.36, graph 0 to 9.36, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.95, graph 0 to 10.95, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.55, graph 0 to 12.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.07, graph 0 to 14.07, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.70, graph 0 to 15.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 9 failed of 25536"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
