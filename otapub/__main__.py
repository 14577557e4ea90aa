from otapub.cli import main

main()
